/**
 * The sandbox's event source mapping keeps to the function's maximum concurrency, as
 * Lambda's does, however many of its loops are receiving at once.
 */
import { CreateQueueCommand, SendMessageCommand } from '@aws-sdk/client-sqs';
import type { SQSBatchResponse } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sqsClient } from '../../functions/adapters/aws.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import { DELIVER_QUEUE } from '../../functions/definitions/queues.ts';
import { type Emulators, startEmulators } from '../../sandbox/emulators.ts';
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
});
