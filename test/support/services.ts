/**
 * The API's webhook service over the sandbox's own stores, with some of its delivery
 * dependencies or options replaced: how tests reach a failure between two of its writes.
 */

import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { NO_SWITCHES } from '../../functions/adapters/switch-store.ts';
import { makeSender } from '../../functions/adapters/webhook-sender.ts';
import type { WebhookStore } from '../../functions/adapters/webhook-store.ts';
import type { DeliveryDeps } from '../../functions/app/delivery/deps.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import { WebhookService, type WebhookServiceDeps } from '../../functions/app/webhooks.ts';
import type { DeliverQueueMessage } from '../../functions/core/model.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';

export function webhookService(
  sandbox: Sandbox,
  overrides: { readonly delivery?: Partial<DeliveryDeps>; readonly service?: Partial<Omit<WebhookServiceDeps, 'delivery'>> } = {},
): WebhookService {
  const delivery = deliveryDeps(sandbox.wiring, sandbox.notifier);
  return new WebhookService({
    webhooks: delivery.webhooks as WebhookStore,
    tenants: { get: async () => undefined },
    send: makeSender({ allowPrivateTargets: true }),
    timeoutMs: 1_000,
    now: Date.now,
    ...overrides.service,
    delivery: { ...delivery, ...overrides.delivery },
  });
}

/**
 * `deps` with no kill switch in force and every deliver-queue message they send kept in
 * `sent` (its SQS delay in `delays`, in the same order), not sent.
 */
function keepingSends(deps: DeliveryDeps): { deps: DeliveryDeps; sent: DeliverQueueMessage[]; delays: number[] } {
  const sent: DeliverQueueMessage[] = [];
  const delays: number[] = [];
  const send = async (messages: readonly DeliverQueueMessage[], delaySeconds = 0) => {
    sent.push(...messages);
    delays.push(...messages.map(() => delaySeconds));
  };
  return { deps: { ...deps, switches: NO_SWITCHES, queue: { send } }, sent, delays };
}

/** The delivery function's dependencies over `client` (one a test has put a fault in), keeping its sends (`keepingSends`). */
export function deliveryDepsOver(sandbox: Sandbox, client: DynamoDBDocumentClient) {
  return keepingSends(deliveryDeps({ ...sandbox.wiring, dynamo: client }, sandbox.notifier));
}

/**
 * The delivery function's dependencies as they would run `offsetMs` from now, keeping its
 * sends (`keepingSends`), and making its POSTs by `send` if given.
 */
export function deliveryDepsAt(sandbox: Sandbox, offsetMs: number, send?: DeliveryDeps['send']) {
  return keepingSends({ ...deliveryDeps(sandbox.wiring, sandbox.notifier), now: () => Date.now() + offsetMs, ...(send && { send }) });
}
