/**
 * A delivery held for a webhook that is never enabled again outlives the retention
 * period, TTL removes it, and its owner then deletes the webhook. It was counted once,
 * as held; its end, gone unsent, is counted too: as dropped for `retention`, as a
 * release counts held deliveries it finds gone (`dropLostHeld`). A count held less than a
 * day is a hold that died between its two writes, not a loss, and is not counted; one
 * held since a time not known is counted, as a release counts it.
 *
 * A delivery being held while its webhook is deleted (counted on the webhook before the
 * deletion, stored after it looked) is not left behind, held for nobody and counted nowhere.
 */
import { DeleteCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import type { DeliveryMessage } from '../../functions/core/model.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook } from '../support/api.ts';
import { beforeFirstWrite } from '../support/faults.ts';
import { deliveredEventFixture, resourceDeliveryFixture } from '../support/fixtures.ts';
import { setHeldSince } from '../support/held.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';
import { deliveryDepsOver } from '../support/services.ts';

let sandbox: Sandbox;
let receiver: Receiver;
withSandbox({ canary: false }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

const DAY_MS = 86_400_000;

describe('a deleted webhook whose held deliveries outlived the retention period', () => {
  it.each([
    { heldFor: '8 days', heldForMs: 8 * DAY_MS, dropped: 1 },
    // Less than a day: no held item expires that soon; a hold died between its writes.
    { heldFor: 'an hour', heldForMs: 3_600_000, dropped: 0 },
    // Not known (holding since before it was kept): taken for a loss, as a release takes it.
    { heldFor: 'a time not known', heldForMs: undefined, dropped: 1 },
  ])('counts them as dropped for retention (held for $heldFor: $dropped)', async ({ heldForMs, dropped: expected }) => {
    const tenant = await createTenant(sandbox, 'heldexp');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'heldexp:0', url: `${receiver.url}/heldexp` });
    receiver.answer('/heldexp', 200);
    await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });
    const { deps } = deliveryDepsOver(sandbox, documentClient(sandbox.emulators.dynamo));
    const message = resourceDeliveryFixture(tenant.id, hook.id, 1, 'heldexp:1');
    const heldBefore = sandbox.metrics.total('DeliveriesHeld');
    expect(await handleDeliverMessage(deps, message)).toBe('held');
    expect(sandbox.metrics.total('DeliveriesHeld')).toBe(heldBefore + 1);

    // Later: the webhook has held since then, and its held item is gone (TTL, or a hold that died).
    await setHeldSince(sandbox, tenant.id, hook.id, heldForMs === undefined ? undefined : Date.now() - heldForMs);
    const [gone] = (await deps.held.page(hook.id, 10, Date.now())).live;
    await sandbox.wiring.dynamo.send(
      new DeleteCommand({ TableName: sandbox.wiring.controlTable, Key: { pk: `held#${hook.id}`, sk: gone?.sk } }),
    );

    const dropped = sandbox.metrics.total('EventsDropped');
    const discarded = sandbox.metrics.total('EventsDiscardedByOwner');
    // The owner deletes the abandoned webhook.
    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(204);

    // Its one accepted event was held, then lost to TTL: counted as dropped, once.
    expect(sandbox.metrics.total('EventsDropped') - dropped).toBe(expected);
    expect(sandbox.metrics.total('EventsDiscardedByOwner') - discarded).toBe(0);
    expect(receiver.acceptedEvents('/heldexp')).toHaveLength(0);
  });
});

describe('a webhook deleted between the count of a hold and its store', () => {
  it.each([
    { resources: 1, path: 'one part' },
    { resources: 2, path: 'one part per resource, counted together' },
  ])('leaves nothing held and counts the events as discarded by their owner ($path)', async ({ resources }) => {
    const tenant = await createTenant(sandbox, 'heldrace');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'heldrace:0', url: `${receiver.url}/heldrace` });
    receiver.answer('/heldrace', 200);
    await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });
    const client = documentClient(sandbox.emulators.dynamo);
    // The owner deletes the webhook after the hold counted the delivery on it, before the
    // held item is stored: the deletion removes what is held by then, which is nothing.
    const deleted = beforeFirstWrite(
      client,
      (input) => String((input.Item as { pk?: unknown } | undefined)?.pk ?? '').startsWith('held#'),
      async () => {
        expect((await call(sandbox, 'DELETE', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(204);
      },
    );
    const { deps } = deliveryDepsOver(sandbox, client);
    const message: DeliveryMessage = {
      deliveryId: `msg_heldrace${resources}`,
      tenantId: tenant.id,
      webhookId: hook.id,
      attempt: 1,
      events: Array.from({ length: resources }, (_, i) =>
        deliveredEventFixture({
          id: `evt_heldrace${resources}_${i}`,
          seq: 1,
          resource: `heldrace:${i + 1}`,
          parents: ['heldrace:0'],
          data: i,
        }),
      ),
    };
    const discarded = sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' });
    const dropped = sandbox.metrics.total('EventsDropped');

    await handleDeliverMessage(deps, message);

    expect(deleted()).toBe(true);
    // Nothing is left held for a webhook that is gone, and its events are counted once.
    expect(await deps.held.count(hook.id)).toBe(0);
    expect(sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' }) - discarded).toBe(resources);
    expect(sandbox.metrics.total('EventsDropped') - dropped).toBe(0);
  });
});
