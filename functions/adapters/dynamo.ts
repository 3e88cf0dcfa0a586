/** Helpers shared by the DynamoDB stores. */
import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import {
  BatchWriteCommand,
  type BatchWriteCommandInput,
  type DynamoDBDocumentClient,
  GetCommand,
  QueryCommand,
  type QueryCommandInput,
  type QueryCommandOutput,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import { sentAgain } from './aws.ts';

export function isConditionFailure(error: unknown): boolean {
  return error instanceof ConditionalCheckFailedException || (error instanceof Error && error.name === 'ConditionalCheckFailedException');
}

/** Whether a write was refused on the SDK's second try or later: maybe by its own first try (see `sentAgain`). */
export function refusedOnRetry(error: unknown): boolean {
  return isConditionFailure(error) && sentAgain(error);
}

/** Whether a conditional write applied: false when its condition refused it; any other error is thrown. */
export async function applied(write: Promise<unknown>): Promise<boolean> {
  try {
    await write;
    return true;
  } catch (error) {
    if (isConditionFailure(error)) return false;
    throw error;
  }
}

/**
 * Whether a conditional write that leaves `mark.token` in `mark.attribute` of its item
 * applied, as `applied`, but for one case: refused on the SDK's second try or later, it
 * may have been refused by its own first try, which applied and lost its answer (the
 * condition refuses an item as that try left it). A consistent read of the attribute
 * tells: the token read back is this write's, which applied.
 */
export async function appliedOwn(
  write: Promise<unknown>,
  mark: { client: DynamoDBDocumentClient; table: string; key: Record<string, unknown>; attribute: string; token: string },
): Promise<boolean> {
  try {
    await write;
    return true;
  } catch (error) {
    if (refusedOnRetry(error)) {
      const found = await mark.client.send(
        new GetCommand({
          TableName: mark.table,
          Key: mark.key,
          ConsistentRead: true,
          ProjectionExpression: '#attribute',
          ExpressionAttributeNames: { '#attribute': mark.attribute },
        }),
      );
      if (found.Item?.[mark.attribute] === mark.token) return true;
    }
    if (isConditionFailure(error)) return false;
    throw error;
  }
}

/** `{ '#a': 'a', … }` for every name, so no reserved word ever reaches an expression. */
export function names(...attributes: string[]): Record<string, string> {
  return Object.fromEntries(attributes.map((name) => [`#${name}`, name]));
}

/**
 * The pages of a query, one request each, from `startKey` (if any) until the last, or
 * until `more`, asked after each page, says stop.
 */
export async function* queryPages(
  client: DynamoDBDocumentClient,
  input: Omit<QueryCommandInput, 'ExclusiveStartKey'>,
  options: { startKey?: Record<string, unknown>; more?: () => boolean } = {},
): AsyncGenerator<QueryCommandOutput> {
  let startKey = options.startKey;
  do {
    const result = await client.send(new QueryCommand({ ...input, ExclusiveStartKey: startKey }));
    yield result;
    startKey = result.LastEvaluatedKey;
  } while (startKey && (options.more?.() ?? true));
}

type WriteRequest = NonNullable<BatchWriteCommandInput['RequestItems']>[string][number];

/**
 * Writes requests in batches of 25, retrying unprocessed ones; throws if some never land.
 * It throws only once no batch can write any more: a caller that marks the items that
 * did not land (ingest voids their slots with a conditional put) must do so after every
 * write that could still land, or a batch's unconditional put, still in flight or
 * retried, would overwrite the mark and store an item answered as not stored. So once
 * one batch has failed, the others finish the request they have in flight, try nothing
 * more (what is still unprocessed is not written), and the first failure is thrown.
 */
export async function batchWrite(client: DynamoDBDocumentClient, tableName: string, requests: readonly WriteRequest[]): Promise<void> {
  const batches: WriteRequest[][] = [];
  for (let i = 0; i < requests.length; i += 25) batches.push(requests.slice(i, i + 25));
  let failure: { readonly error: unknown } | undefined;
  // The batches at once: their items are independent, and a request's latency is its slowest batch.
  await Promise.all(
    batches.map(async (batch) => {
      let pending = batch;
      try {
        for (let attempt = 0; pending.length > 0; attempt++) {
          if (attempt === 6) throw new Error(`BatchWrite left ${pending.length} items unprocessed`);
          if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 20 * 2 ** attempt));
          if (failure) return;
          const result = await client.send(new BatchWriteCommand({ RequestItems: { [tableName]: pending } }));
          pending = result.UnprocessedItems?.[tableName] ?? [];
        }
      } catch (error) {
        failure ??= { error };
      }
    }),
  );
  if (failure) throw failure.error;
}

/**
 * Sets `attribute` to `now` on an existing item, unless it is set already, and answers
 * the item as it then is; undefined when there is no item. The first half of a change
 * in two steps (a lift, a deletion): sent again, it answers the first mark, and the
 * second step goes on from it.
 */
export async function markOnce(
  client: DynamoDBDocumentClient,
  tableName: string,
  key: Record<string, unknown>,
  attribute: string,
  now: number,
): Promise<Record<string, unknown> | undefined> {
  try {
    const result = await client.send(
      new UpdateCommand({
        TableName: tableName,
        Key: key,
        UpdateExpression: `SET #${attribute} = if_not_exists(#${attribute}, :now)`,
        ConditionExpression: 'attribute_exists(#pk)',
        ExpressionAttributeNames: names('pk', attribute),
        ExpressionAttributeValues: { ':now': now },
        ReturnValues: 'ALL_NEW',
      }),
    );
    return result.Attributes ?? {};
  } catch (error) {
    if (isConditionFailure(error)) return undefined;
    throw error;
  }
}

export function epochSeconds(ms: number): number {
  return Math.floor(ms / 1000);
}
