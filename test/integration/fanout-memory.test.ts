/**
 * One distributor invocation whose turns fan large events out to many webhooks runs
 * within a Lambda function's memory (512 MB): each turn's deliveries are copies of its
 * events per webhook, and all of them were written out at once.
 */
import { Worker } from 'node:worker_threads';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { SQSEvent } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import { documentClient, sqsClient } from '../../functions/adapters/aws.ts';
import { IdempotencyStore } from '../../functions/adapters/idempotency-store.ts';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { WebhookStore } from '../../functions/adapters/webhook-store.ts';
import { publish } from '../../functions/app/ingest.ts';
import { buildConfig } from '../../functions/core/config.ts';
import { newId } from '../../functions/core/ids.ts';
import type { ObjectKey } from '../../functions/core/model.ts';
import { NO_LOGS, NO_METRICS } from '../../functions/core/telemetry.ts';
import { FUNCTION_MEMORY_MB } from '../../functions/definitions/environment.ts';
import { createQueues, createTables, startEmulatorsOnThread } from '../../sandbox/emulators.ts';
import { webhookFixture } from '../support/fixtures.ts';

/** Doorbells of one invocation (a batch holds up to 10): five such turns were past the heap. */
const OBJECTS = 5;
const WEBHOOKS = 100;
const EVENTS = 15;
const TENANT = 'ten_fanout';

describe('a batch of turns fanning 64 KiB events out to a tenant’s 100 webhooks', () => {
  it('runs within a Lambda function’s 512 MB', async () => {
    const emulators = await startEmulatorsOnThread(undefined, () => undefined);
    try {
      const tables = await createTables(new DynamoDBClient({ ...emulators.dynamo }));
      const queues = await createQueues(sqsClient({ ...emulators.sqs }));
      const client = documentClient(emulators.dynamo);
      const webhooks = new WebhookStore({ client, tableName: tables.Control as string });
      const at = new Date().toISOString();
      for (let i = 0; i < WEBHOOKS; i++) {
        await webhooks.put(
          webhookFixture({
            id: newId('wh', Date.now()),
            tenantId: TENANT,
            resource: 'project:7',
            url: 'https://example.com/hook',
            secrets: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'],
            createdAt: at,
            updatedAt: at,
          }),
        );
      }
      const store = new QueueStore({ client, tableName: tables.Events as string, retentionDays: 7 });
      const config = buildConfig({});
      const rung: ObjectKey[] = [];
      const ingest = {
        queues: store,
        idempotency: new IdempotencyStore({ client, tableName: tables.Events as string, retentionDays: 7, ingestGraceMs: 60_000 }),
        doorbell: { ring: async (k: ObjectKey) => void rung.push(k) },
        config,
        metrics: NO_METRICS,
        logger: NO_LOGS,
        now: Date.now,
        newEventId: () => newId('evt', Date.now()),
      } as unknown as Parameters<typeof publish>[0];
      // Each object gets one request's worth (under 1 MiB) of events at the data limit.
      const data = 'x'.repeat(64 * 1024 - 2);
      for (let o = 0; o < OBJECTS; o++) {
        const events = Array.from({ length: EVENTS }, () => ({
          resource: `task:${o}`,
          parents: ['project:7'],
          type: 'task.changed',
          data,
          idempotencyKey: undefined,
        }));
        const outcome = await publish(ingest, TENANT, events);
        expect(outcome.results.every((r) => r.status === 'accepted')).toBe(true);
      }
      // One invocation with a batch of their doorbells, as the event source mapping sends them.
      const event = {
        Records: rung.map((k, i) => ({
          messageId: `m${i}`,
          body: JSON.stringify({ tenant: k.tenantId, resource: k.resource }),
          attributes: { MessageGroupId: `${k.tenantId}|${k.resource}`, ApproximateReceiveCount: '1' },
        })),
      } as unknown as SQSEvent;
      // On a thread with a Lambda function's memory for its heap (less the runtime's own).
      const worker = new Worker(new URL('../support/distributor-thread.ts', import.meta.url), {
        workerData: {
          dynamo: emulators.dynamo,
          sqs: emulators.sqs,
          eventsTable: tables.Events,
          controlTable: tables.Control,
          deliverQueueUrl: queues.Deliver?.url,
          event,
        },
        resourceLimits: { maxOldGenerationSizeMb: FUNCTION_MEMORY_MB - 64 },
      });
      const answer = await new Promise<unknown>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      await worker.terminate();
      expect(answer).toEqual({ batchItemFailures: [] });
    } finally {
      await emulators.stop();
    }
  }, 300_000);
});
