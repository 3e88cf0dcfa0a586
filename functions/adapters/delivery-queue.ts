/** The standard "deliver" queue. MessageGroupId = tenant, for SQS fair queues. */
import type { SQSClient } from '@aws-sdk/client-sqs';
import type { DeliverQueueMessage, DeliveryMessage } from '../core/model.ts';
import { SendBatcher, sqsMessageBody } from './send-batcher.ts';

/** Reads a deliver-queue message; throws on one that is malformed (it then goes to the dead-letter queue). */
export function parseDeliverQueueMessage(body: string): DeliverQueueMessage {
  return readDeliverQueueBody(body).message;
}

/**
 * A deliver-queue message and when it was due: the time its send asked SQS to make it
 * visible (epoch ms), which every send stamps on the body; undefined for a body sent
 * without one. How late a delivery function received it after that is the queue's
 * backlog alone, whatever delays the message waited out on purpose.
 */
export function readDeliverQueueBody(body: string): { message: DeliverQueueMessage; dueAt: number | undefined } {
  const { dueAt, ...message } = JSON.parse(body) as Record<string, unknown>;
  return { message: checkedMessage(message), dueAt: typeof dueAt === 'number' ? dueAt : undefined };
}

function checkedMessage(message: Record<string, unknown>): DeliverQueueMessage {
  if (typeof message.tenantId !== 'string' || typeof message.webhookId !== 'string') {
    throw new Error('A deliver-queue message names a tenant and a webhook');
  }
  if (message.kind === 'recheck') {
    if (typeof message.heldBefore !== 'number') throw new Error('A recheck message says which holds it answers for');
    return message as unknown as DeliverQueueMessage;
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
  readonly #batcher: SendBatcher;

  constructor(options: { client: SQSClient; queueUrl: string; lingerMs?: number }) {
    this.#batcher = new SendBatcher(options);
  }

  /**
   * Sends deliveries; concurrent sends within a few milliseconds share
   * SendMessageBatch requests (see SendBatcher).
   */
  async send(messages: readonly DeliverQueueMessage[], delaySeconds = 0): Promise<void> {
    const dueAt = Date.now() + delaySeconds * 1000;
    await this.#batcher.send(
      messages.map((message) => ({
        MessageBody: sqsMessageBody({ ...message, dueAt }),
        MessageGroupId: message.tenantId,
        ...(delaySeconds > 0 && { DelaySeconds: delaySeconds }),
      })),
    );
  }
}
