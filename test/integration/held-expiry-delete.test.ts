/**
 * A delivery held for a webhook that is never enabled again outlives the retention
 * period, TTL removes it, and its owner then deletes the webhook. It was counted once,
 * as held; its end, gone unsent, is counted too: as dropped for `retention`, as a
 * release counts held deliveries it finds gone (`dropLostHeld`). A count held less than a
 * day is a hold that died between its two writes, not a loss, and is not counted; one
 * held since a time not known is counted, as a release counts it.
 */
import { DeleteCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import type { DeliveryMessage } from '../../functions/core/model.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
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
    const message: DeliveryMessage = {
      deliveryId: 'msg_heldexp',
      tenantId: tenant.id,
      webhookId: hook.id,
      attempt: 1,
      events: [deliveredEventFixture({ id: 'evt_heldexp', seq: 1, resource: 'heldexp:1', data: 'x' })],
    };
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
