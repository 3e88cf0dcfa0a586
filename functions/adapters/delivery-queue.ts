/** The standard "deliver" queue. MessageGroupId = tenant, for SQS fair queues. */
import { SendMessageBatchCommand, type SendMessageBatchRequestEntry, type SQSClient } from '@aws-sdk/client-sqs';
import type { DeliverQueueMessage, DeliveryMessage } from '../core/model.ts';

const MAX_BATCH_ENTRIES = 10;
const MAX_BATCH_BYTES = 256 * 1024;

/** Reads a deliver-queue message; throws on one that is malformed (it then goes to the dead-letter queue). */
export function parseDeliverQueueMessage(body: string): DeliverQueueMessage {
  const message = JSON.parse(body) as Record<string, unknown>;
  if (typeof message.tenantId !== 'string' || typeof message.webhookId !== 'string') {
    throw new Error('A deliver-queue message names a tenant and a webhook');
  }
  if (message.kind === 'probe' || message.kind === 'release') {
    if (typeof message.token !== 'string') throw new Error(`A ${message.kind} message carries a token`);
    return message as unknown as DeliverQueueMessage;
  }
  if (typeof message.deliveryId !== 'string' || !Array.isArray(message.events) || typeof message.attempt !== 'number') {
    throw new Error('A delivery message names a delivery, its events and its attempt');
  }
  return message as unknown as DeliveryMessage;
}

export class DeliveryQueue {
  readonly #client: SQSClient;
  readonly #queueUrl: string;

  constructor(options: { client: SQSClient; queueUrl: string }) {
    this.#client = options.client;
    this.#queueUrl = options.queueUrl;
  }

  /** Sends deliveries in batches of up to 10 entries and 256 KiB; retries entries SQS refused. */
  async send(messages: readonly DeliverQueueMessage[], delaySeconds = 0): Promise<void> {
    let batch: SendMessageBatchRequestEntry[] = [];
    let bytes = 0;
    for (const message of messages) {
      const body = JSON.stringify(message);
      const size = Buffer.byteLength(body);
      if (batch.length === MAX_BATCH_ENTRIES || (batch.length > 0 && bytes + size > MAX_BATCH_BYTES)) {
        await this.#sendBatch(batch);
        batch = [];
        bytes = 0;
      }
      batch.push({
        Id: String(batch.length),
        MessageBody: body,
        MessageGroupId: message.tenantId,
        ...(delaySeconds > 0 && { DelaySeconds: delaySeconds }),
      });
      bytes += size;
    }
    if (batch.length > 0) await this.#sendBatch(batch);
  }

  async #sendBatch(entries: SendMessageBatchRequestEntry[]): Promise<void> {
    let pending = entries;
    for (let attempt = 0; pending.length > 0; attempt++) {
      if (attempt === 5) throw new Error(`SQS refused ${pending.length} deliveries`);
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 25 * 2 ** attempt));
      const result = await this.#client.send(new SendMessageBatchCommand({ QueueUrl: this.#queueUrl, Entries: pending }));
      const failed = new Set((result.Failed ?? []).map((entry) => entry.Id));
      pending = pending.filter((entry) => failed.has(entry.Id));
    }
  }
}
