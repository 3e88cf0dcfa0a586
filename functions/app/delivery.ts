/**
 * Delivery (SPEC §3 Deliveries): sign and POST one delivery, and decide what its
 * result means. For now a failed attempt goes back to the deliver queue (the
 * caller reports the record as failed) and, past the queue's redrive limit, to
 * its dead-letter queue: nothing is dropped without a count.
 */

import type { Sender } from '../adapters/webhook-sender.ts';
import { deliveryBody } from '../core/deliveries.ts';
import { type DeliveryMessage, SLUICE_VERSION, type Webhook } from '../core/model.ts';
import { decideAttempt } from '../core/outcome.ts';
import { deliveryHeaders } from '../core/signing.ts';
import type { LoggerPort, MetricsPort } from '../core/telemetry.ts';

export interface WebhookSource {
  get(tenantId: string, id: string): Promise<Webhook | undefined>;
  update(tenantId: string, id: string, changes: { status: 'disabled' }, now: string): Promise<Webhook | undefined>;
}

export interface DeliveryDeps {
  readonly webhooks: WebhookSource;
  readonly send: Sender;
  readonly timeoutMs: number;
  readonly metrics: MetricsPort;
  readonly logger: LoggerPort;
  readonly now: () => number;
}

export type DeliveryOutcome = 'delivered' | 'retry' | 'disabled' | 'dropped';

/** Thrown so that the record is reported failed and SQS delivers it again. */
export class RetryDeliveryError extends Error {
  constructor(reason: string) {
    super(`Delivery will be retried: ${reason}`);
    this.name = 'RetryDeliveryError';
  }
}

export async function deliver(deps: DeliveryDeps, message: DeliveryMessage): Promise<DeliveryOutcome> {
  const context = { tenant: message.tenantId, webhook: message.webhookId, delivery: message.deliveryId };
  const webhook = await deps.webhooks.get(message.tenantId, message.webhookId);
  if (webhook?.status !== 'active') {
    // The webhook was deleted or disabled after these events were routed to it.
    const reason = webhook ? 'webhook_disabled' : 'webhook_deleted';
    deps.metrics.count('EventsDropped', message.events.length, { reason });
    deps.logger.info('Delivery dropped', { ...context, reason, events: message.events.length });
    return 'dropped';
  }
  const body = deliveryBody(webhook.id, message.events);
  const timestamp = Math.floor(deps.now() / 1000);
  const headers = deliveryHeaders(webhook.secrets, message.deliveryId, timestamp, body, SLUICE_VERSION);
  const result = await deps.send({ url: webhook.url, headers: { ...headers }, body, timeoutMs: deps.timeoutMs });
  const decision = decideAttempt(result.statusCode);
  deps.metrics.count('DeliveryAttempts', 1, { result: decision });
  switch (decision) {
    case 'delivered':
      deps.metrics.count('EventsDelivered', message.events.length);
      return 'delivered';
    case 'disable':
      await deps.webhooks.update(message.tenantId, webhook.id, { status: 'disabled' }, new Date(deps.now()).toISOString());
      deps.metrics.count('WebhooksDisabled', 1, { reason: 'gone' });
      deps.metrics.count('EventsDropped', message.events.length, { reason: 'webhook_gone' });
      deps.logger.warn('Endpoint answered 410: webhook disabled', context);
      return 'disabled';
    case 'retry':
      deps.logger.info('Delivery attempt failed', { ...context, status: result.statusCode, error: result.error });
      throw new RetryDeliveryError(result.error ?? `status ${result.statusCode}`);
  }
}
