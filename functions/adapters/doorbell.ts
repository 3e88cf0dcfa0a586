/** The doorbell: a message in the FIFO "distribute" queue, one group per object. */
import type { SQSClient } from '@aws-sdk/client-sqs';
import { objectGroupId } from '../core/keys.ts';
import type { ObjectKey } from '../core/model.ts';
import { SendBatcher } from './send-batcher.ts';

export interface DoorbellMessage {
  readonly tenant: string;
  readonly resource: string;
  /** Rung when a kill switch was lifted: read the switches afresh, not from the cache. */
  readonly fresh?: boolean;
  /** Rung by an ingest that kept its event on the idle object's meta item: a quiet turn may do. */
  readonly quiet?: boolean;
}

export function parseDoorbell(body: string): ObjectKey & { fresh: boolean; quiet: boolean } {
  const message = JSON.parse(body) as Partial<DoorbellMessage>;
  if (typeof message.tenant !== 'string' || typeof message.resource !== 'string') {
    throw new Error('A doorbell names a tenant and a resource');
  }
  return { tenantId: message.tenant, resource: message.resource, fresh: message.fresh === true, quiet: message.quiet === true };
}

/**
 * Rings go through a SendBatcher: the objects one ingest request flips, or one
 * distributor invocation re-rings, share SendMessageBatch requests.
 */
export class Doorbell {
  readonly #batcher: SendBatcher;

  constructor(options: { client: SQSClient; queueUrl: string; lingerMs?: number }) {
    this.#batcher = new SendBatcher(options);
  }

  /**
   * Rings for an object. `token` makes the deduplication id: two rings with the same
   * token within five minutes are one message (a retried send cannot double-ring).
   */
  async ring(key: ObjectKey, token: string, options: { fresh?: boolean; quiet?: boolean } = {}): Promise<void> {
    const group = objectGroupId(key);
    const body: DoorbellMessage = {
      tenant: key.tenantId,
      resource: key.resource,
      ...(options.fresh && { fresh: true }),
      ...(options.quiet && { quiet: true }),
    };
    await this.#batcher.send([
      {
        MessageBody: JSON.stringify(body),
        MessageGroupId: group,
        MessageDeduplicationId: `${group.slice(0, 64)}:${token}`.slice(0, 128),
      },
    ]);
  }
}
