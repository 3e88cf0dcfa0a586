/**
 * Network faults on a real client, against the real emulators: what a lost answer does
 * to a write that applied.
 */
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
