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
 * The delivery function's dependencies over `client` (one a test has put a fault in), with
 * no kill switch in force and every deliver-queue message it sends kept in `sent`, not sent.
 */
export function deliveryDepsOver(sandbox: Sandbox, client: DynamoDBDocumentClient): { deps: DeliveryDeps; sent: DeliverQueueMessage[] } {
  const sent: DeliverQueueMessage[] = [];
  const deps: DeliveryDeps = {
    ...deliveryDeps({ ...sandbox.wiring, dynamo: client }, sandbox.notifier),
    switches: NO_SWITCHES,
    queue: { send: async (messages) => void sent.push(...messages) },
  };
  return { deps, sent };
}

/**
 * The delivery function's dependencies as they would run `offsetMs` from now, with no kill
 * switch in force, every deliver-queue message kept in `sent` (and its SQS delay in
 * `delays`, in the same order) rather than sent, and its POSTs made by `send` if given.
 */
export function deliveryDepsAt(sandbox: Sandbox, offsetMs: number, send?: DeliveryDeps['send']) {
  const sent: unknown[] = [];
  const delays: number[] = [];
  const deps = {
    ...deliveryDeps(sandbox.wiring, sandbox.notifier),
    now: () => Date.now() + offsetMs,
    switches: NO_SWITCHES,
    queue: {
      send: async (messages: readonly unknown[], delaySeconds = 0) => {
        sent.push(...messages);
        delays.push(...messages.map(() => delaySeconds));
      },
    },
    ...(send && { send }),
  } as unknown as DeliveryDeps;
  return { deps, sent, delays };
}
