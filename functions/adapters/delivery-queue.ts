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
  if (message.kind === 'check') {
    if (typeof message.sentAt !== 'number') throw new Error('A check message says when it was sent');
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

/**
 * The most message bodies (bytes) a container has written and not yet seen sent. A
 * turn's messages share their events, but each body is a copy of them (and the SDK's
 * request another): one object's 15 events of 64 KiB fanned out to 100 webhooks are
 * 100 MB of bodies, and a batch of ten such turns was past the function's 512 MB.
 */
export const MAX_UNSENT_BYTES = 16 * 1024 * 1024;

/** Bytes taken and given back; a take waits while others hold the room it needs (one alone always goes). */
class ByteGate {
  readonly #limit: number;
  #taken = 0;
  #waiting: Array<() => void> = [];

  constructor(limit: number) {
    this.#limit = limit;
  }

  async take(bytes: number): Promise<void> {
    while (this.#taken > 0 && this.#taken + bytes > this.#limit) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
    this.#taken += bytes;
  }

  give(bytes: number): void {
    this.#taken -= bytes;
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const wake of waiting) wake();
  }
}

export class DeliveryQueue {
  readonly #batcher: SendBatcher;
  readonly #gate: ByteGate;

  constructor(options: { client: SQSClient; queueUrl: string; lingerMs?: number; maxUnsentBytes?: number }) {
    this.#batcher = new SendBatcher(options);
    this.#gate = new ByteGate(options.maxUnsentBytes ?? MAX_UNSENT_BYTES);
  }

  /**
   * Sends deliveries; concurrent sends within a few milliseconds share
   * SendMessageBatch requests (see SendBatcher). Each body is written only when the
   * container's unsent bodies leave room for it (MAX_UNSENT_BYTES), so a large fan-out
   * goes out in waves instead of all at once in memory; a failed send stops the rest.
   */
  async send(messages: readonly DeliverQueueMessage[], delaySeconds = 0): Promise<void> {
    const dueAt = Date.now() + delaySeconds * 1000;
    const sent: Promise<void>[] = [];
    let failure: { error: unknown } | undefined;
    for (const message of messages) {
      if (failure) break;
      const entry = {
        MessageBody: sqsMessageBody({ ...message, dueAt }),
        MessageGroupId: message.tenantId,
        ...(delaySeconds > 0 && { DelaySeconds: delaySeconds }),
      };
      // ASCII (sqsMessageBody escapes the rest): its length is its bytes.
      const bytes = entry.MessageBody.length;
      await this.#gate.take(bytes);
      const sending = this.#batcher.send([entry]).finally(() => this.#gate.give(bytes));
      // Noted at once: a failure while later bodies wait for room is this send's, not unhandled.
      sending.catch((error: unknown) => {
        failure ??= { error };
      });
      sent.push(sending);
    }
    await Promise.all(sent);
    if (failure) throw failure.error;
  }
}
