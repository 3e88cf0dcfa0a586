/** Deliveries held for a webhook, as a test sets them up. */
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { DeliveryDeps } from '../../functions/app/delivery/deps.ts';
import type { DeliveryMessage } from '../../functions/core/model.ts';
import { tenantPk } from '../../functions/definitions/tables.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';

/**
 * Holds a delivery as the delivery function does: counts it on the webhook within
 * `cap`, then stores it. Answers whether the count and the store each applied. It notes
 * no `heldSince`, as for a webhook holding since before that was kept: a count above
 * what is held is then taken for held items DynamoDB's TTL removed.
 */
export async function holdDelivery(
  deps: Pick<DeliveryDeps, 'webhooks' | 'held'>,
  message: DeliveryMessage,
  cap = 10,
): Promise<[counted: boolean, stored: boolean]> {
  const counted = (await deps.webhooks.countHeld(message.tenantId, message.webhookId, 1, cap)) !== undefined;
  return [counted, await deps.held.hold(message, Date.now())];
}

/**
 * Sandbox settings under which holding, releasing and pacing show within seconds: one
 * failure quarantines, probes every second, a cap of two held deliveries, three POSTs a
 * second per endpoint, and a 400 ms delivery timeout.
 */
export const QUICK_HOLDS = {
  retryScheduleSeconds: [0, 1, 1, 1],
  retryJitter: 0,
  quarantineAfterFailures: 1,
  probeIntervalMinSeconds: 1,
  probeIntervalMaxSeconds: 1,
  heldPerWebhook: 2,
  endpointRatePerSecond: 3,
  deliveryTimeoutMs: 400,
  failingAttemptIntervalMs: 300,
};

/**
 * Sets when the webhook began to hold deliveries (`held_since`), as if it had held since
 * `at`; `undefined` removes it, as for a webhook holding since before it was kept.
 */
export async function setHeldSince(sandbox: Sandbox, tenantId: string, webhookId: string, at: number | undefined): Promise<void> {
  await sandbox.wiring.dynamo.send(
    new UpdateCommand({
      TableName: sandbox.wiring.controlTable,
      Key: { pk: tenantPk(tenantId), sk: `webhook#${webhookId}` },
      UpdateExpression: at === undefined ? 'REMOVE #since' : 'SET #since = :since',
      ExpressionAttributeNames: { '#since': 'held_since' },
      ...(at !== undefined && { ExpressionAttributeValues: { ':since': at } }),
    }),
  );
}
