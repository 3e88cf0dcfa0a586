/**
 * The sandbox's event source mapping keeps to the function's maximum concurrency, as
 * Lambda's does, however many of its loops are receiving at once; and an invocation
 * that runs past the function's timeout ends there (and is billed to it), as in Lambda; and a batch response
 * that names a message not in the batch fails the whole batch, as Lambda takes it.
 */
import { CreateQueueCommand, SendMessageCommand } from '@aws-sdk/client-sqs';
import type { SQSBatchResponse } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sqsClient } from '../../functions/adapters/aws.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import { DELIVER_QUEUE } from '../../functions/definitions/queues.ts';
import { type Emulators, startEmulators } from '../../sandbox/emulators.ts';
import { InMemoryMetrics } from '../../sandbox/metrics.ts';
import { Poller } from '../../sandbox/poller.ts';

let emulators: Emulators;

beforeAll(async () => {
  emulators = await startEmulators();
});

afterAll(async () => {
  await emulators?.stop();
});

describe('the sandbox poller', () => {
  it('never runs more invocations at once than its concurrency, with several loops receiving', async () => {
    const client = sqsClient({ ...emulators.sqs });
    const url = (await client.send(new CreateQueueCommand({ QueueName: 'poller-concurrency' }))).QueueUrl as string;
    let running = 0;
    let most = 0;
    const handled: string[] = [];
    const poller = new Poller({
      client,
      queue: { definition: { ...DELIVER_QUEUE, batchSize: 1 }, url, deadLetterUrl: url },
      handler: async (event): Promise<SQSBatchResponse> => {
        running++;
        most = Math.max(most, running);
        await new Promise((resolve) => setTimeout(resolve, 300));
        handled.push(...event.Records.map((r) => r.body));
        running--;
        return { batchItemFailures: [] };
      },
      functionName: 'probe',
      logger: NO_LOGS,
      concurrency: 1,
      pollers: 3,
    });
    poller.start();
    // Every loop is waiting in a receive when the messages come.
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (let i = 0; i < 4; i++) await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: `m${i}` }));
    const deadline = Date.now() + 10_000;
    while (handled.length < 4 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    await poller.stop();
    expect(handled.sort()).toEqual(['m0', 'm1', 'm2', 'm3']);
    expect(most).toBe(1);
  }, 20_000);

  it('ends an invocation that hangs at the function timeout: its slot goes on, its batch comes back after the visibility timeout, stopping waits no longer', async () => {
    const client = sqsClient({ ...emulators.sqs });
    const url = (await client.send(new CreateQueueCommand({ QueueName: 'poller-hang', Attributes: { VisibilityTimeout: '2' } })))
      .QueueUrl as string;
    const metrics = new InMemoryMetrics();
    const handled: Array<{ body: string; receives: string | undefined }> = [];
    const billed: number[] = [];
    let hung = false;
    const poller = new Poller({
      client,
      queue: { definition: { ...DELIVER_QUEUE, batchSize: 1, consumerTimeoutSeconds: 1 }, url, deadLetterUrl: url },
      handler: async (event): Promise<SQSBatchResponse> => {
        const record = event.Records[0];
        if (record?.body === 'hangs' && !hung) {
          hung = true;
          return new Promise<never>(() => undefined);
        }
        handled.push({ body: record?.body ?? '', receives: record?.attributes.ApproximateReceiveCount });
        return { batchItemFailures: [] };
      },
      functionName: 'probe',
      logger: NO_LOGS,
      metrics,
      fn: 'delivery',
      concurrency: 1,
      pollers: 1,
      onInvocation: (_fn, ms) => void billed.push(ms),
    });
    poller.start();
    await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'hangs' }));
    await new Promise((resolve) => setTimeout(resolve, 200));
    await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'next' }));

    const deadline = Date.now() + 10_000;
    while (handled.length < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    // The one slot was given back at the timeout; the hung batch was not deleted, and came back.
    expect(handled).toEqual([
      { body: 'next', receives: '1' },
      { body: 'hangs', receives: '2' },
    ]);
    // A timeout is an error of the function, as Lambda's Errors metric counts it.
    expect(metrics.points('function:delivery:Errors', 0, Date.now() + 1)).toEqual([1]);
    // And is billed, as Lambda bills it, to its timeout; the two that answered too.
    expect(billed).toHaveLength(3);
    expect(billed.filter((ms) => ms >= 1_000)).toHaveLength(1);

    // An invocation hung again does not hold the stop.
    hung = false;
    await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'hangs' }));
    while (!hung && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    const stopping = Date.now();
    await poller.stop();
    expect(Date.now() - stopping).toBeLessThan(2_500);
  }, 20_000);

  it('deletes none of a batch whose response names a message not in it (empty, missing or unknown), as Lambda does', async () => {
    const client = sqsClient({ ...emulators.sqs });
    const url = (await client.send(new CreateQueueCommand({ QueueName: 'poller-bad-ids', Attributes: { VisibilityTimeout: '1' } })))
      .QueueUrl as string;
    const answers: SQSBatchResponse[] = [
      { batchItemFailures: [{ itemIdentifier: 'not-in-this-batch' }] },
      { batchItemFailures: [{ itemIdentifier: '' }] },
      { batchItemFailures: [{ itemIdentifier: undefined as unknown as string }] },
      { batchItemFailures: [] },
    ];
    const receives: Array<string | undefined> = [];
    const poller = new Poller({
      client,
      queue: { definition: { ...DELIVER_QUEUE, batchSize: 1 }, url, deadLetterUrl: url },
      handler: async (event): Promise<SQSBatchResponse> => {
        receives.push(event.Records[0]?.attributes.ApproximateReceiveCount);
        return answers[receives.length - 1] ?? { batchItemFailures: [] };
      },
      functionName: 'probe',
      logger: NO_LOGS,
      concurrency: 1,
      pollers: 1,
    });
    poller.start();
    await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'once' }));
    const deadline = Date.now() + 15_000;
    while (receives.length < 4 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    // Received again after each bad response; deleted after the good one.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await poller.stop();
    expect(receives).toEqual(['1', '2', '3', '4']);
  }, 20_000);

  it('counts a message not deleted in the queue age until SQS would take it for a poison pill (3 receives), as AWS documents', async () => {
    const client = sqsClient({ ...emulators.sqs });
    const url = (await client.send(new CreateQueueCommand({ QueueName: 'poller-poison', Attributes: { VisibilityTimeout: '1' } })))
      .QueueUrl as string;
    const metrics = new InMemoryMetrics();
    const receives: number[] = [];
    const key = `queue:${DELIVER_QUEUE.logicalName}:ApproximateAgeOfOldestMessage`;
    const ageAfter: number[] = [];
    const poller = new Poller({
      client,
      queue: { definition: { ...DELIVER_QUEUE, batchSize: 1 }, url, deadLetterUrl: url },
      // Fails its one record every time, as a handler fails a poison message.
      handler: async (event): Promise<SQSBatchResponse> => {
        const record = event.Records[0];
        receives.push(Number(record?.attributes.ApproximateReceiveCount));
        return { batchItemFailures: [{ itemIdentifier: record?.messageId ?? '' }] };
      },
      functionName: 'poison',
      logger: NO_LOGS,
      metrics,
    });
    await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'poison' }));
    poller.start();
    const deadline = Date.now() + 15_000;
    for (let seen = 0; seen < 3 && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      if (receives.length > seen) {
        seen = receives.length;
        // Between receives, as the monitor measures it.
        await new Promise((resolve) => setTimeout(resolve, 300));
        poller.recordAge();
        ageAfter.push(Math.max(...metrics.points(key, Date.now() - 1, Date.now() + 1)));
      }
    }
    await poller.stop();
    expect(receives.slice(0, 3)).toEqual([1, 2, 3]);
    // Counted while waiting out its first two visibility timeouts; left out after its third receive.
    expect(ageAfter[0]).toBeGreaterThan(0);
    expect(ageAfter[1]).toBeGreaterThan(ageAfter[0] as number);
    expect(ageAfter[2]).toBe(0);
  }, 20_000);
});
