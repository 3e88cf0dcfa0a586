/**
 * Faults on a real client, against the real emulators: what a lost answer does to a
 * write that applied; leases that nobody can take.
 */
import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';

/**
 * Makes the first try of each write that `matches` picks reach DynamoDB and apply, but
 * lose its answer (the connection resets), so that the SDK tries it again, as it does
 * for such errors. Answers how many answers were lost so far.
 */
export function loseFirstAnswers(client: DynamoDBDocumentClient, matches: (input: Record<string, unknown>) => boolean): () => number {
  const answered = new WeakSet<object>();
  let lost = 0;
  client.middlewareStack.add(
    (next) => async (args) => {
      const result = await next(args);
      const input = args.input as Record<string, unknown>;
      if (matches(input) && !answered.has(input)) {
        answered.add(input);
        lost++;
        throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
      }
      return result;
    },
    { step: 'deserialize', name: 'loseFirstAnswer' },
  );
  return () => lost;
}

/**
 * Refuses every take of an object's lease, as DynamoDB refuses one while another holder's
 * lease is live (a ConditionalCheckFailedException), without sending it: as if every
 * object had a holder that never let go. Every ordinary turn then ends `lease_held`, and
 * only quiet turns (which take no lease) still publish. Answers a function that ends the
 * fault.
 */
export function refuseLeases(client: DynamoDBDocumentClient): () => void {
  const name = 'refuseLeases';
  client.middlewareStack.add(
    (next) => async (args) => {
      const update = (args.input as { UpdateExpression?: unknown }).UpdateExpression;
      // The lease's take is the one write that sets its owner (adapters/queue-store.ts, acquireLease).
      if (typeof update === 'string' && update.startsWith('SET #lease_owner = :owner')) {
        throw new ConditionalCheckFailedException({ message: 'The conditional request failed', $metadata: {} });
      }
      return next(args);
    },
    { step: 'initialize', name },
  );
  return () => void client.middlewareStack.remove(name);
}

/**
 * Runs `before` once, just ahead of the first write that `matches` picks, and then sends
 * that write: another actor's step landing between two of a function's writes.
 */
export function beforeFirstWrite(
  client: DynamoDBDocumentClient,
  matches: (input: Record<string, unknown>) => boolean,
  before: () => Promise<void>,
): () => boolean {
  let ran = false;
  client.middlewareStack.add(
    (next) => async (args) => {
      if (!ran && matches(args.input as Record<string, unknown>)) {
        ran = true;
        await before();
      }
      return next(args);
    },
    { step: 'initialize', name: 'beforeFirstWrite' },
  );
  return () => ran;
}
