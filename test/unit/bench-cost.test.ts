import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BatchWriteCommand, DeleteCommand, GetCommand, PutCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { account, countsSince, instrument, itemSize, newCounts, recordInvocation, snapshotCounts } from '../../bench/accounting.ts';
import { costPerMillion, endpointWaitPer100MsPerMillion, LAMBDA_MB_PER_VCPU, PRICES } from '../../bench/cost.ts';
import { documentClient } from '../../functions/adapters/aws.ts';
import { FUNCTION_MEMORY_MB } from '../../functions/definitions/environment.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';

describe('benchmark cost model', () => {
  it('sums invocations and their durations per function', () => {
    const counts = newCounts();
    recordInvocation(counts, 'api', 12);
    recordInvocation(counts, 'api', 8);
    expect(counts.invocations.api).toEqual({ count: 2, ms: 20 });
  });

  it('bills each invocation its duration rounded up to the millisecond, as Lambda does', () => {
    const counts = newCounts();
    recordInvocation(counts, 'delivery', 0.3);
    recordInvocation(counts, 'delivery', 4.01);
    expect(counts.invocations.delivery).toEqual({ count: 2, ms: 1 + 5 });
  });

  it('counts a window of a run: what was counted after a snapshot', () => {
    const counts = newCounts();
    counts.calls.dynamodb = { UpdateItemCommand: 3 };
    counts.wru = 3;
    counts.indexWru.by_schedule = 2;
    recordInvocation(counts, 'api', 10);
    const before = snapshotCounts(counts);
    counts.calls.dynamodb.UpdateItemCommand = 5;
    counts.calls.sqs = { SendMessageBatchCommand: 1 };
    counts.wru = 5;
    counts.sqsFifoRequests = 1;
    recordInvocation(counts, 'api', 4);
    recordInvocation(counts, 'delivery', 7);
    const window = countsSince(counts, before);
    expect(window.calls).toEqual({ dynamodb: { UpdateItemCommand: 2 }, sqs: { SendMessageBatchCommand: 1 } });
    expect([window.wru, window.sqsFifoRequests, window.indexWru]).toEqual([2, 1, {}]);
    expect(window.invocations).toEqual({ api: { count: 1, ms: 4 }, delivery: { count: 1, ms: 7 } });
  });

  it('prices each service per million delivered events', () => {
    const counts = newCounts();
    counts.wru = 3_000_000;
    counts.rru = 2_000_000;
    counts.sqsStandardRequests = 1_000_000;
    counts.sqsFifoRequests = 200_000;
    counts.snsRequests = 100_000;
    counts.invocations.delivery = { count: 100_000, ms: 100_000 * 20 };
    const cost = costPerMillion(counts, 1_000_000, 100_000, 0);
    expect(cost.api_gateway).toBeCloseTo(0.35, 3);
    expect(cost.dynamodb).toBeCloseTo(3 * PRICES.dynamoWruPerMillion + 2 * PRICES.dynamoRruPerMillion, 3);
    expect(cost.sqs).toBeCloseTo(0.4 + 0.1, 3);
    // Webhook-disabled notices, published to SNS at $0.50 a million.
    expect(cost.sns).toBeCloseTo(0.05, 3);
    // 100,000 invocations of 20 ms at 0.5 GB: $0.02 + 1,000 GB-s.
    expect(cost.lambda).toBeCloseTo(0.02 + 1_000 * PRICES.lambdaArmPerGbSecond, 3);
    expect(cost.total).toBeCloseTo(cost.api_gateway + cost.lambda + cost.dynamodb + cost.sqs + cost.sns, 2);
  });

  it("bills the functions' CPU as a 512 MB Lambda runs it: slower than the sandbox's whole core", () => {
    const counts = newCounts();
    counts.invocations.delivery = { count: 100_000, ms: 100_000 * 20 };

    // Of the 2,000 s measured, 500 s were CPU: at 512 MB it takes 1,769 / 512 times as long.
    const cost = costPerMillion(counts, 1_000_000, 0, 0, 500);

    const gbSeconds = (2_000 + 500 * (LAMBDA_MB_PER_VCPU / FUNCTION_MEMORY_MB - 1)) * 0.5;
    expect(cost.lambda).toBeCloseTo(0.02 + gbSeconds * PRICES.lambdaArmPerGbSecond, 3);
    expect(cost.lambda).toBeGreaterThan(costPerMillion(counts, 1_000_000, 0, 0).lambda);
  });
});

describe('benchmark SQS accounting', () => {
  const receive = (queueUrl: string, bodies: string[], elapsedMs = 5) =>
    ({
      service: 'sqs',
      command: 'ReceiveMessageCommand',
      input: { QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 20 },
      output: { Messages: bodies.map((Body, i) => ({ MessageId: String(i), Body })) },
      elapsedMs,
    }) as const;

  it('bills a receive per started 64 KiB of the messages it returned, as a send is billed for those it sent', () => {
    const counts = newCounts();
    const delivery = 'x'.repeat(20 * 1024);

    // Ten deliveries of 20 KiB each (events carried inline): 200 KiB, four chunks.
    account(
      counts,
      receive(
        'http://sqs/000000000000/deliver',
        Array.from({ length: 10 }, () => delivery),
      ),
    );
    account(counts, receive('http://sqs/000000000000/distribute.fifo', ['{"tenant":"ten_1"}']));
    // An empty receive at the end of its wait: one request.
    account(counts, receive('http://sqs/000000000000/deliver', [], 20_000));

    expect(counts.sqsStandardRequests).toBe(4 + 1);
    expect(counts.sqsFifoRequests).toBe(1);
    expect(counts.calls.sqs).toEqual({ ReceiveMessageCommand: 3 });
  });
});

describe("what a subscriber's answer time adds", () => {
  it("prices 100 ms of every POST at the functions' memory, per million delivered events", () => {
    // One POST per 10 events at 512 MB: 0.1 s × 0.5 GB × $0.0000133334 per 10 events.
    expect(endpointWaitPer100MsPerMillion(100_000, 1_000_000)).toBeCloseTo(
      (0.1 * (FUNCTION_MEMORY_MB / 1024) * PRICES.lambdaArmPerGbSecond * 1e6) / 10,
      3,
    );
    expect(endpointWaitPer100MsPerMillion(0, 1_000)).toBe(0);
  });
});

describe('benchmark call accounting', () => {
  let emulators: Emulators;
  let tableName: string;
  let eventsTable: string;

  beforeAll(async () => {
    emulators = await startEmulators();
    const names = await createTables(new DynamoDBClient({ ...emulators.dynamo }));
    tableName = names.Control as string;
    eventsTable = names.Events as string;
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

  /** A document client counted into its own counts, as the bench's clients are. */
  const counted = () => {
    const counts = newCounts();
    const client = documentClient({ ...emulators.dynamo });
    instrument(counts, client, 'dynamodb');
    return { counts, client };
  };

  const scheduleNames = { '#sched_shard': 'sched_shard', '#sched_key': 'sched_key', '#depth': 'depth' };

  /** Lists an object's meta item in `by_schedule` under `shard`, as a reservation does. */
  const schedule = (pk: string, shard: string) =>
    new UpdateCommand({
      TableName: eventsTable,
      Key: { pk, sk: 'meta' },
      UpdateExpression: 'SET #sched_shard = :shard, #sched_key = :pk, #depth = :depth',
      ExpressionAttributeNames: scheduleNames,
      ExpressionAttributeValues: { ':shard': shard, ':pk': pk, ':depth': 1 },
    });

  /** Takes an object's meta item off `by_schedule`, as the reconciler's unlisting does. */
  const unlist = (pk: string, condition?: string) =>
    new UpdateCommand({
      TableName: eventsTable,
      Key: { pk, sk: 'meta' },
      UpdateExpression: 'REMOVE #sched_shard, #sched_key',
      ExpressionAttributeNames: { '#sched_shard': 'sched_shard', '#sched_key': 'sched_key' },
      ...(condition && {
        ConditionExpression: condition,
        ExpressionAttributeNames: scheduleNames,
        ExpressionAttributeValues: { ':none': 0 },
      }),
    });

  it('bills an update that lists an item in a KEYS_ONLY index one index write on top of the table write', async () => {
    const { counts, client } = counted();

    await client.send(schedule('ten_idx#doc:enter', 's1'));

    expect(counts.indexWru).toEqual({ by_schedule: 1 });
    expect(counts.wru).toBe(2);
  });

  it('bills no index write for an update that leaves the index keys of a KEYS_ONLY index as they were', async () => {
    const { counts, client } = counted();
    const pk = 'ten_idx#doc:same';
    await client.send(schedule(pk, 's1'));
    const listed = counts.wru;

    await client.send(schedule(pk, 's1'));
    await client.send(
      new UpdateCommand({
        TableName: eventsTable,
        Key: { pk, sk: 'meta' },
        UpdateExpression: 'SET #sched_key = if_not_exists(#sched_key, :other), #depth = :depth',
        ExpressionAttributeNames: { '#sched_key': 'sched_key', '#depth': 'depth' },
        ExpressionAttributeValues: { ':other': 'elsewhere', ':depth': 2 },
      }),
    );

    // Two table writes, and the index still has only the first listing.
    expect(counts.wru - listed).toBe(2);
    expect(counts.indexWru).toEqual({ by_schedule: 1 });
  });

  it('bills a delete on the index for an update that removes the index keys, and a delete and a put for one that moves them', async () => {
    const { counts, client } = counted();
    const pk = 'ten_idx#doc:leave';
    await client.send(schedule(pk, 's1'));

    await client.send(unlist(pk));
    expect(counts.indexWru).toEqual({ by_schedule: 2 });

    await client.send(schedule(pk, 's2'));
    await client.send(schedule(pk, 's3'));
    // Listed again (a put), then moved to another shard (a delete and a put).
    expect(counts.indexWru).toEqual({ by_schedule: 5 });
    expect(counts.wru).toBe(4 + 5);
  });

  it('bills no index write for a refused conditional write, and keeps the item where it was', async () => {
    const { counts, client } = counted();
    const pk = 'ten_idx#doc:refused';
    await client.send(schedule(pk, 's1'));

    await expect(client.send(unlist(pk, '#depth = :none'))).rejects.toThrow(/conditional request failed/i);
    expect(counts.wru).toBe(2 + 1);
    expect(counts.indexWru).toEqual({ by_schedule: 1 });

    // Still listed: removing the keys now is a delete on the index.
    await client.send(unlist(pk));
    expect(counts.indexWru).toEqual({ by_schedule: 2 });
  });

  it('bills an index write for a change to an attribute an INCLUDE index holds, and none for the others', async () => {
    const { counts, client } = counted();
    const webhook = (id: string, body: string) => ({
      pk: 'ten_idx',
      sk: `wh#${id}`,
      gsi1pk: 'ten_idx#doc:a',
      gsi1sk: id,
      status: 'active',
      body,
    });
    const set = (id: string, name: string, value: string) =>
      new UpdateCommand({
        TableName: tableName,
        Key: { pk: 'ten_idx', sk: `wh#${id}` },
        UpdateExpression: 'SET #a = :v',
        ExpressionAttributeNames: { '#a': name },
        ExpressionAttributeValues: { ':v': value },
      });

    await client.send(new PutCommand({ TableName: tableName, Item: webhook('wh_small', 'small') }));
    await client.send(set('wh_small', 'status', 'disabled'));
    // A put into the index, then a write of the changed entry: 1 WRU each, on top of the table's.
    expect(counts.indexWru).toEqual({ by_resource: 2 });
    expect(counts.wru).toBe(4);

    // The item is 1.5 KiB, its entry a few keys and short attributes: 1 WRU an index write.
    await client.send(new PutCommand({ TableName: tableName, Item: webhook('wh_big', 'x'.repeat(1500)) }));
    await client.send(set('wh_big', 'status', 'disabled'));
    expect(counts.indexWru).toEqual({ by_resource: 2 + 2 });
    expect(counts.wru).toBe(4 + 2 + 2 + 2);

    // An attribute the index does not hold (a webhook's health, say): the table alone.
    await client.send(set('wh_small', 'last_failure', 'HTTP 500'));
    expect(counts.indexWru).toEqual({ by_resource: 4 });
    expect(counts.wru).toBe(10 + 1);
  });

  it('bills puts, batch writes and deletes on an index by how they move the item', async () => {
    const { counts, client } = counted();
    const key = { pk: 'ten_idx', sk: 'wh#wh_moved' };
    const item = (resource: string) => ({ ...key, gsi1pk: `ten_idx#${resource}`, gsi1sk: 'wh_moved' });

    await client.send(new BatchWriteCommand({ RequestItems: { [tableName]: [{ PutRequest: { Item: item('doc:a') } }] } }));
    expect(counts.indexWru).toEqual({ by_resource: 1 });
    await client.send(new PutCommand({ TableName: tableName, Item: item('doc:b') }));
    expect(counts.indexWru).toEqual({ by_resource: 3 });
    await client.send(new BatchWriteCommand({ RequestItems: { [tableName]: [{ DeleteRequest: { Key: key } }] } }));
    expect(counts.indexWru).toEqual({ by_resource: 4 });
    expect(counts.wru).toBe(3 + 4);
  });

  it('bills an update and a delete of an item over 1 KiB by its size', async () => {
    const { counts, client } = counted();
    const key = { pk: 'bench#big', sk: 'a' };
    await client.send(new PutCommand({ TableName: tableName, Item: { ...key, body: 'x'.repeat(1500) } }));

    await client.send(
      new UpdateCommand({
        TableName: tableName,
        Key: key,
        UpdateExpression: 'SET #n = :n',
        ExpressionAttributeNames: { '#n': 'n' },
        ExpressionAttributeValues: { ':n': 1 },
      }),
    );
    await client.send(new DeleteCommand({ TableName: tableName, Key: key }));

    // 2 WRU each for the put, the update and the delete (the old rule billed the last two 1 WRU).
    expect(counts.wru).toBe(6);
    expect(counts.indexWru).toEqual({});
  });

  it('asks for the consumed capacity without the application seeing it', async () => {
    const { counts, client } = counted();
    const input = { TableName: tableName, Item: { pk: 'bench#quiet', sk: 'a' } };

    const output = await client.send(new PutCommand(input));
    const asked = await client.send(new GetCommand({ TableName: tableName, Key: input.Item, ReturnConsumedCapacity: 'TOTAL' }));

    expect(input).not.toHaveProperty('ReturnConsumedCapacity');
    expect(output).not.toHaveProperty('ConsumedCapacity');
    expect(asked.ConsumedCapacity).toMatchObject({ CapacityUnits: 0.5 });
    expect(counts.rru).toBe(0.5);
  });

  it("times dynalite's own part of each call, per window: none of a window before the calls", async () => {
    const client = documentClient({ ...emulators.dynamo });
    const from = Date.now();
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => client.send(new PutCommand({ TableName: tableName, Item: { pk: 'bench#timed', sk: `${i}` } }))),
    );
    const to = Date.now() + 1;
    const times = await emulators.dynamoServiceTimes(from, to);
    expect(times).toHaveLength(20);
    expect(times.every((ms) => ms > 0)).toBe(true);
    expect(await emulators.dynamoServiceTimes(from - 60_000, from - 30_000)).toEqual([]);
  });
});
