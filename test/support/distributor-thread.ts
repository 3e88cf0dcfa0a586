/**
 * One distributor invocation on a thread of its own, with the heap a Lambda function of
 * FUNCTION_MEMORY_MB has at most (see fanout-memory.test.ts): its answer is posted back.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Context, SQSEvent } from 'aws-lambda';
import { documentClient, sqsClient } from '../../functions/adapters/aws.ts';
import { DeliveryQueue } from '../../functions/adapters/delivery-queue.ts';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { NO_SWITCHES } from '../../functions/adapters/switch-store.ts';
import { WebhookStore } from '../../functions/adapters/webhook-store.ts';
import { Distributor } from '../../functions/app/distributor.ts';
import { buildConfig } from '../../functions/core/config.ts';
import { NO_LOGS, NO_METRICS } from '../../functions/core/telemetry.ts';
import { makeDistributorHandler } from '../../functions/distributor/process.ts';

const { dynamo, sqs, eventsTable, controlTable, deliverQueueUrl, event } = workerData as {
  dynamo: Parameters<typeof documentClient>[0];
  sqs: Parameters<typeof sqsClient>[0];
  eventsTable: string;
  controlTable: string;
  deliverQueueUrl: string;
  event: SQSEvent;
};
const client = documentClient(dynamo);
const distributor = new Distributor({
  queues: new QueueStore({ client, tableName: eventsTable, retentionDays: 7 }),
  switches: NO_SWITCHES,
  subscriptions: new WebhookStore({ client, tableName: controlTable }),
  deliveries: new DeliveryQueue({ client: sqsClient(sqs), queueUrl: deliverQueueUrl }),
  doorbell: { ring: async () => undefined },
  config: buildConfig({}),
  metrics: NO_METRICS,
  logger: NO_LOGS,
  now: Date.now,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
});
const answer = await makeDistributorHandler(distributor, NO_LOGS)(event, {} as Context);
parentPort?.postMessage(answer);
