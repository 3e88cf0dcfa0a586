/** The doorbell: a message in the FIFO "distribute" queue, one group per object. */
import { SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { objectGroupId } from '../core/keys.ts';
import type { ObjectKey } from '../core/model.ts';

export interface DoorbellMessage {
  readonly tenant: string;
  readonly resource: string;
  /** Rung when a kill switch was lifted: read the switches afresh, not from the cache. */
  readonly fresh?: boolean;
}

export function parseDoorbell(body: string): ObjectKey & { fresh: boolean } {
  const message = JSON.parse(body) as Partial<DoorbellMessage>;
  if (typeof message.tenant !== 'string' || typeof message.resource !== 'string') {
    throw new Error('A doorbell names a tenant and a resource');
  }
  return { tenantId: message.tenant, resource: message.resource, fresh: message.fresh === true };
}

export class Doorbell {
  readonly #client: SQSClient;
  readonly #queueUrl: string;

  constructor(options: { client: SQSClient; queueUrl: string }) {
    this.#client = options.client;
    this.#queueUrl = options.queueUrl;
  }

  /**
   * Rings for an object. `token` makes the deduplication id: two rings with the same
   * token within five minutes are one message (a retried send cannot double-ring).
   */
  async ring(key: ObjectKey, token: string, options: { fresh?: boolean } = {}): Promise<void> {
    const group = objectGroupId(key);
    const body: DoorbellMessage = { tenant: key.tenantId, resource: key.resource, ...(options.fresh && { fresh: true }) };
    await this.#client.send(
      new SendMessageCommand({
        QueueUrl: this.#queueUrl,
        MessageBody: JSON.stringify(body),
        MessageGroupId: group,
        MessageDeduplicationId: `${group.slice(0, 64)}:${token}`.slice(0, 128),
      }),
    );
  }
}
