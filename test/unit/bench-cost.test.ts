import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetCommand, PutCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instrument, itemSize, newCounts, recordInvocation } from '../../bench/accounting.ts';
import { costPerMillion, PRICES } from '../../bench/cost.ts';
import { documentClient } from '../../functions/adapters/aws.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';

describe('benchmark cost model', () => {
  it('sums invocations and their durations per function', () => {
    const counts = newCounts();
    recordInvocation(counts, 'api', 12);
    recordInvocation(counts, 'api', 8);
    expect(counts.invocations.api).toEqual({ count: 2, ms: 20 });
  });

  it('prices each service per million delivered events', () => {
    const counts = newCounts();
    counts.wru = 3_000_000;
    counts.rru = 2_000_000;
    counts.sqsStandardRequests = 1_000_000;
    counts.sqsFifoRequests = 200_000;
    counts.invocations.delivery = { count: 100_000, ms: 100_000 * 20 };
    const cost = costPerMillion(counts, 1_000_000, 100_000, 0);
    expect(cost.api_gateway).toBeCloseTo(0.35, 3);
    expect(cost.dynamodb).toBeCloseTo(3 * PRICES.dynamoWruPerMillion + 2 * PRICES.dynamoRruPerMillion, 3);
    expect(cost.sqs).toBeCloseTo(0.4 + 0.1, 3);
    // 100,000 invocations of 20 ms at 0.5 GB: $0.02 + 1,000 GB-s.
    expect(cost.lambda).toBeCloseTo(0.02 + 1_000 * PRICES.lambdaArmPerGbSecond, 3);
    expect(cost.total).toBeCloseTo(cost.api_gateway + cost.lambda + cost.dynamodb + cost.sqs, 2);
  });
});

describe('benchmark call accounting', () => {
  let emulators: Emulators;
  let tableName: string;

  beforeAll(async () => {
    emulators = await startEmulators();
    const names = await createTables(new DynamoDBClient({ ...emulators.dynamo }));
    tableName = names.Control as string;
  });
  afterAll(async () => {
    await emulators.stop();
  });

  it('sizes items as DynamoDB bills them', () => {
    expect(itemSize('héllo')).toBe(6);
    expect(itemSize(12345)).toBe(4);
    expect(itemSize({ a: 'xy' })).toBe(3 + 1 + 1 + 2);
  });

  it('counts what the document client sends by operation, with the capacity DynamoDB would bill', async () => {
    const counts = newCounts();
    const client = documentClient({ ...emulators.dynamo });
    instrument(counts, client, 'dynamodb');
    const big = 'x'.repeat(1500);
    await client.send(new PutCommand({ TableName: tableName, Item: { pk: 'bench#1', sk: 'a', body: big } }));
    await client.send(new PutCommand({ TableName: tableName, Item: { pk: 'bench#1', sk: 'b', body: 'small' } }));
    await client.send(new GetCommand({ TableName: tableName, Key: { pk: 'bench#1', sk: 'a' }, ConsistentRead: true }));
    await client.send(
      new QueryCommand({ TableName: tableName, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': 'bench#1' } }),
    );
    await expect(
      client.send(
        new UpdateCommand({
          TableName: tableName,
          Key: { pk: 'bench#1', sk: 'b' },
          UpdateExpression: 'SET n = :n',
          ConditionExpression: 'attribute_not_exists(pk)',
          ExpressionAttributeValues: { ':n': 1 },
        }),
      ),
    ).rejects.toThrow();
    expect(counts.calls.dynamodb).toEqual({ PutItemCommand: 2, GetItemCommand: 1, QueryCommand: 1, UpdateItemCommand: 1 });
    // 1.5 KiB is two WRUs, the small item one, and the refused update still pays its write.
    expect(counts.wru).toBe(4);
    // A consistent read of one item under 4 KiB, and an eventually consistent query of both.
    expect(counts.rru).toBe(1.5);
  });
});
