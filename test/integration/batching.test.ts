/**
 * Requests shared by concurrent work in one container: SQS sends gathered into
 * batches, one endpoint's send slots taken in one write, one webhook read once.
 * Counted with the benchmark's call accounting on real SDK clients.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instrument, newCounts } from '../../bench/accounting.ts';
import { documentClient, sqsClient } from '../../functions/adapters/aws.ts';
import { DeliveryQueue } from '../../functions/adapters/delivery-queue.ts';
import { Doorbell, parseDoorbell } from '../../functions/adapters/doorbell.ts';
import { PaceStore } from '../../functions/adapters/pace-store.ts';
import { SendBudgets } from '../../functions/adapters/send-budgets.ts';
import type { DeliveryMessage } from '../../functions/core/model.ts';
import { createQueues, createTables, type Emulators, type SandboxQueue, startEmulators } from '../../sandbox/emulators.ts';

let emulators: Emulators;
let controlTable: string;
let queues: Record<string, SandboxQueue>;

beforeAll(async () => {
  emulators = await startEmulators();
  controlTable = (await createTables(new DynamoDBClient({ ...emulators.dynamo }))).Control as string;
  queues = await createQueues(sqsClient({ ...emulators.sqs }));
});
afterAll(async () => {
  await emulators.stop();
});

async function receiveAll(url: string, expected: number): Promise<string[]> {
  const client = sqsClient({ ...emulators.sqs });
  const bodies: string[] = [];
  for (let i = 0; i < 20 && bodies.length < expected; i++) {
    const { Messages } = await client.send(new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }));
    bodies.push(...(Messages ?? []).map((m) => m.Body ?? ''));
  }
  return bodies;
}

describe('SQS sends from concurrent callers', () => {
  it('rings 25 objects at once in three batch requests, and every doorbell arrives once', async () => {
    const counts = newCounts();
    const client = sqsClient({ ...emulators.sqs });
    instrument(counts, client, 'sqs');
    const url = queues.Distribute?.url as string;
    const doorbell = new Doorbell({ client, queueUrl: url });
    const keys = Array.from({ length: 25 }, (_, i) => ({ tenantId: 'ten_batch', resource: `doc:${i}` }));
    await Promise.all(keys.map((key) => doorbell.ring(key, 's1')));
    expect(counts.calls.sqs).toEqual({ SendMessageBatchCommand: 3 });
    const rung = (await receiveAll(url, 25)).map((body) => parseDoorbell(body).resource);
    expect(rung.sort()).toEqual(keys.map((k) => k.resource).sort());
  });

  it('sends deliveries with their own delays, and fails the callers of a batch SQS refuses', async () => {
    const counts = newCounts();
    const client = sqsClient({ ...emulators.sqs });
    instrument(counts, client, 'sqs');
    const url = queues.Deliver?.url as string;
    const queue = new DeliveryQueue({ client, queueUrl: url });
    const message = (n: number): DeliveryMessage => ({
      deliveryId: `msg_${n}`,
      tenantId: 'ten_batch',
      webhookId: 'wh_1',
      events: [],
      attempt: 1,
    });
    await Promise.all([queue.send([message(1), message(2)]), queue.send([message(3)], 0), queue.send([message(4)])]);
    expect(counts.calls.sqs).toEqual({ SendMessageBatchCommand: 1 });
    expect((await receiveAll(url, 4)).length).toBe(4);

    const broken = new DeliveryQueue({ client, queueUrl: `${url}-missing` });
    await expect(Promise.all([broken.send([message(5)]), broken.send([message(6)])])).rejects.toThrow();
  });
});

describe('per-endpoint send slots', () => {
  it('grants the concurrent takes of one endpoint in one write while the window has room', async () => {
    const counts = newCounts();
    const client = documentClient({ ...emulators.dynamo });
    instrument(counts, client, 'dynamodb');
    const budgets = new SendBudgets({ client, tableName: controlTable });
    const now = 5_000_000;
    const granted = await Promise.all(Array.from({ length: 8 }, () => budgets.takeSlot('wh_slots', 10, 1000, now)));
    expect(granted).toEqual(Array(8).fill(true));
    expect(counts.calls.dynamodb).toEqual({ UpdateItemCommand: 1 });
  });

  it('never grants more than the limit: past it, takes go one by one and the rest are refused', async () => {
    const client = documentClient({ ...emulators.dynamo });
    const budgets = new SendBudgets({ client, tableName: controlTable });
    const now = 6_000_000;
    const first = await Promise.all(Array.from({ length: 6 }, () => budgets.takeSlot('wh_full', 10, 1000, now)));
    const second = await Promise.all(Array.from({ length: 6 }, () => budgets.takeSlot('wh_full', 10, 1000, now)));
    expect(first.filter(Boolean)).toHaveLength(6);
    expect(second.filter(Boolean)).toHaveLength(4);
    // The next window has its own budget.
    expect(await budgets.takeSlot('wh_full', 10, 1000, now + 1000)).toBe(true);
  });
});

describe("an endpoint's pace", () => {
  it('gives the concurrent sends of one container consecutive shares of the endpoint in one write, a second of them at once', async () => {
    const counts = newCounts();
    const client = documentClient({ ...emulators.dynamo });
    instrument(counts, client, 'dynamodb');
    const paces = new PaceStore({ client, tableName: controlTable, retentionDays: 7 });
    const now = 7_000_000;

    // 10 POSTs/s: 100 ms each, and a second's worth (the burst) may go now.
    const sendAt = await Promise.all(Array.from({ length: 14 }, () => paces.reserve('wh_pace', 100, now)));

    expect(sendAt).toEqual([...Array(10).fill(now), now + 100, now + 200, now + 300, now + 400]);
    expect(counts.calls.dynamodb).toEqual({ UpdateItemCommand: 1 });
  });

  it('never gives two containers the same share, and starts again from now once the endpoint is free', async () => {
    const client = documentClient({ ...emulators.dynamo });
    const [a, b] = [1, 2].map(() => new PaceStore({ client, tableName: controlTable, retentionDays: 7 })) as [PaceStore, PaceStore];
    const now = 8_000_000;

    const sendAt = await Promise.all(
      Array.from({ length: 40 }, (_, i) => ((i % 2 === 0 ? a : b) as PaceStore).reserve('wh_two', 100, now)),
    );

    // 40 shares of 100 ms from now, 10 of them at once, the rest one each 100 ms apart.
    const waiting = sendAt.filter((t) => t > now).sort((x, y) => x - y);
    expect(sendAt.filter((t) => t === now)).toHaveLength(10);
    expect(waiting).toEqual(Array.from({ length: 30 }, (_, i) => now + 100 * (i + 1)));
    // Four seconds on, the endpoint's time is free again.
    expect(await a.reserve('wh_two', 100, now + 4_000)).toBe(now + 4_000);
    expect(await b.reserve('wh_two', 100, now + 4_000)).toBe(now + 4_000);
  });

  it("reads the endpoint's pace once a second in a container for the looks of its waiting deliveries, not once a look, and sees it given back", async () => {
    const counts = newCounts();
    const client = documentClient({ ...emulators.dynamo });
    instrument(counts, client, 'dynamodb');
    const paces = new PaceStore({ client, tableName: controlTable, retentionDays: 7 });
    const other = new PaceStore({ client: documentClient({ ...emulators.dynamo }), tableName: controlTable, retentionDays: 7 });
    const now = 9_000_000;
    // A slow endpoint's backlog has its time taken for the next hour.
    await paces.reserve('wh_looks', 3_600_000, now);

    // A minute on, 30 of its deliveries look in one second, some together, some after.
    const first = await Promise.all(Array.from({ length: 20 }, (_, i) => paces.givenBack('wh_looks', now + 120_000 + i, now + 60_000)));
    const after = await Promise.all(
      Array.from({ length: 10 }, (_, i) => paces.givenBack('wh_looks', now + 120_000 + i, now + 60_000 + 100 * i)),
    );

    expect([...first, ...after]).toEqual(Array(30).fill(false));
    expect(counts.calls.dynamodb).toEqual({ UpdateItemCommand: 1, GetItemCommand: 1 });
    // Another container gives the endpoint's time back (it answers quickly again): looks a second on see it.
    await other.giveBack('wh_looks');
    expect(await paces.givenBack('wh_looks', now + 120_000, now + 61_000)).toBe(true);
  });
});
