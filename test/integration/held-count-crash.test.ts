/**
 * A delivery function that dies between the two writes of a hold (the webhook's held
 * count, then the held item) or of a release (the held item's removal, then the count's
 * decrement) leaves the count one above what is held. Nothing was lost; the release that
 * finds the count above what is held tells it apart from held items DynamoDB's TTL
 * removed by when the webhook began to hold (`heldSince`), and sets it right without a
 * retention gap marker or a drop that pages on-call.
 */
import { DeleteCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import type { DeliveryDeps } from '../../functions/app/delivery/deps.ts';
import { applyHealth } from '../../functions/app/delivery/health.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import type { DeliverQueueMessage, DeliveryMessage } from '../../functions/core/model.ts';
import { DELIVER_QUEUE } from '../../functions/definitions/queues.ts';
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

/** A DynamoDB write that moves the held count down (a release's decrement). */
const decrementsHeldCount = (input: Record<string, unknown>) =>
  typeof input.UpdateExpression === 'string' &&
  input.UpdateExpression.includes('ADD #held_count :delta') &&
  Number((input.ExpressionAttributeValues as Record<string, number> | undefined)?.[':delta']) < 0;
/** A DynamoDB write that moves the held count up (a hold's count). */
const incrementsHeldCount = (input: Record<string, unknown>) =>
  typeof input.UpdateExpression === 'string' &&
  input.UpdateExpression.includes('ADD #held_count :delta') &&
  Number((input.ExpressionAttributeValues as Record<string, number> | undefined)?.[':delta']) > 0;
/** A DynamoDB write of a held item. */
const writesHeldItem = (input: Record<string, unknown>) =>
  String((input.Item as { pk?: string } | undefined)?.pk ?? '').startsWith('held#');

/**
 * The delivery function's deps, on a client of its own whose process dies (the request is
 * never sent, nor any after it) at the first write `dies` picks; every message it sends is
 * kept in `sent`.
 */
function functionDeps(dies: (input: Record<string, unknown>) => boolean = () => false) {
  const client = documentClient(sandbox.emulators.dynamo);
  let died = false;
  client.middlewareStack.add(
    (next) => async (args) => {
      // Dead, it sends nothing more.
      if (died || dies(args.input as Record<string, unknown>)) {
        died = true;
        throw new Error('the function died');
      }
      return next(args);
    },
    { step: 'initialize', name: 'dies' },
  );
  return deliveryDepsOver(sandbox, client);
}

function delivery(tenantId: string, webhookId: string, name: string): DeliveryMessage {
  return {
    deliveryId: `msg_${name}`,
    tenantId,
    webhookId,
    attempt: 1,
    events: [deliveredEventFixture({ id: `evt_${name}`, seq: 1, resource: `${name}:1`, data: name })],
  };
}

/** Runs the messages a release sends, each 31 s after the one before (a count that finds nothing held waits 30 s to settle). */
async function runRelease(deps: DeliveryDeps, sent: DeliverQueueMessage[], startedAt = Date.now()) {
  let skew = 0;
  const later = { ...deps, now: () => startedAt + skew };
  for (let steps = 0, message = sent.shift(); message && steps < 20; steps++, message = sent.shift()) {
    await handleDeliverMessage(later, message);
    skew += 31_000;
  }
}

/** A webhook whose endpoint answers 200, disabled by its owner so that its deliveries are held. */
async function heldWebhook(name: string) {
  const tenant = await createTenant(sandbox, name);
  const hook = await createWebhook(sandbox, tenant.key, { resource: `${name}:0`, url: `${receiver.url}/${name}` });
  receiver.answer(`/${name}`, 200);
  await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });
  return { tenant, hook };
}

async function reenable(deps: DeliveryDeps, tenantId: string, webhookId: string) {
  const webhook = await deps.webhooks.get(tenantId, webhookId);
  if (!webhook) throw new Error('no webhook');
  await applyHealth(deps, webhook, { type: 'reenabled', now: Date.now() });
}

describe('a held count left above what is held by a delivery function that died', () => {
  it('between a release POST and the count going down: set right, with no retention marker nor drop', async () => {
    // Arrange: one delivery held, noting when the webhook began to hold.
    const { tenant, hook } = await heldWebhook('crashrel');
    const { deps } = functionDeps();
    const message = delivery(tenant.id, hook.id, 'crashrel');
    expect(await handleDeliverMessage(deps, message)).toBe('held');
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldSince).toBeGreaterThan(Date.now() - 60_000);
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'retention' });
    const correctedBefore = sandbox.metrics.total('HeldCountsCorrected');

    // Act: the release POSTs it and removes it, and dies before the count goes down; SQS
    // hands the step to another function after the visibility timeout.
    const dying = functionDeps(decrementsHeldCount);
    await reenable(dying.deps, tenant.id, hook.id);
    const [step] = dying.sent.splice(0) as [DeliverQueueMessage];
    expect(step.kind).toBe('release');
    await expect(handleDeliverMessage(dying.deps, step)).rejects.toThrow('the function died');
    const next = functionDeps();
    next.sent.push(step);
    await runRelease(next.deps, next.sent, Date.now() + DELIVER_QUEUE.visibilityTimeoutSeconds * 1000);

    // Assert: the event once, no gap marker, the count at nothing, counted as corrected and not as dropped.
    expect(receiver.acceptedEvents('/crashrel').map((e) => e.id)).toEqual(['evt_crashrel']);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held).toBe(0);
    expect(sandbox.metrics.total('EventsDropped', { reason: 'retention' })).toBe(droppedBefore);
    expect(sandbox.metrics.total('HeldCountsCorrected')).toBe(correctedBefore + 1);
    // The chain ended: the next hold notes its own time.
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldSince).toBeUndefined();
  });

  it('between a hold counted and its item written, SQS holding it again: set right, with no retention marker nor drop', async () => {
    // Arrange
    const { tenant, hook } = await heldWebhook('crashhold');
    const message = delivery(tenant.id, hook.id, 'crashhold');
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'retention' });

    // Act: counted, then died before the held item's write; held again when SQS hands it back.
    await expect(handleDeliverMessage(functionDeps(writesHeldItem).deps, message)).rejects.toThrow('the function died');
    const { deps, sent } = functionDeps();
    expect(await handleDeliverMessage(deps, message)).toBe('held');
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(2);
    await reenable(deps, tenant.id, hook.id);
    await runRelease(deps, sent);

    // Assert
    expect(receiver.acceptedEvents('/crashhold').map((e) => e.id)).toEqual(['evt_crashhold']);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held).toBe(0);
    expect(sandbox.metrics.total('EventsDropped', { reason: 'retention' })).toBe(droppedBefore);
  });

  it("between the first hold's count and the note of when holding began: set right, with no retention marker nor drop", async () => {
    // Arrange: the function dies at the first write after the webhook's first count
    // (before the held item, and before the note of when the webhook began to hold).
    const { tenant, hook } = await heldWebhook('crashnote');
    const message = delivery(tenant.id, hook.id, 'crashnote');
    let counted = false;
    const afterFirstCount = (input: Record<string, unknown>) => {
      if (counted) return true;
      counted = incrementsHeldCount(input);
      return false;
    };
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'retention' });
    const correctedBefore = sandbox.metrics.total('HeldCountsCorrected');

    // Act: SQS hands the delivery back after the visibility timeout, and it is held (counted again).
    await expect(handleDeliverMessage(functionDeps(afterFirstCount).deps, message)).rejects.toThrow('the function died');
    const { deps, sent } = functionDeps();
    expect(await handleDeliverMessage(deps, message)).toBe('held');
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(2);
    await reenable(deps, tenant.id, hook.id);
    await runRelease(deps, sent);

    // Assert: the event once and no gap marker: nothing was lost, and nobody is paged for a loss.
    expect(receiver.acceptedEvents('/crashnote').map((e) => e.id)).toEqual(['evt_crashnote']);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held).toBe(0);
    expect(sandbox.metrics.total('EventsDropped', { reason: 'retention' })).toBe(droppedBefore);
    expect(sandbox.metrics.total('HeldCountsCorrected')).toBe(correctedBefore + 1);
  });

  it('on a webhook holding for longer than the shortest retention period: told as held deliveries TTL removed', async () => {
    // Arrange: two held, the webhook holding for two days; DynamoDB's TTL removed one of them.
    const { tenant, hook } = await heldWebhook('crashold');
    const { deps, sent } = functionDeps();
    for (const name of ['crashold', 'crashold2']) expect(await handleDeliverMessage(deps, delivery(tenant.id, hook.id, name))).toBe('held');
    await setHeldSince(sandbox, tenant.id, hook.id, Date.now() - 2 * DAY_MS);
    const [gone] = (await deps.held.page(hook.id, 10, Date.now())).live;
    await sandbox.wiring.dynamo.send(
      new DeleteCommand({ TableName: sandbox.wiring.controlTable, Key: { pk: `held#${hook.id}`, sk: gone?.sk } }),
    );
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'retention' });

    // Act
    await reenable(deps, tenant.id, hook.id);
    await runRelease(deps, sent);

    // Assert: the one still held, then a retention marker for the one TTL removed.
    const events = receiver.acceptedEvents('/crashold');
    expect(events).toHaveLength(2);
    expect(events[1]).toMatchObject({ type: 'sluice.gap', data: { dropped: 1, reason: 'retention' } });
    expect(sandbox.metrics.total('EventsDropped', { reason: 'retention' })).toBe(droppedBefore + 1);
  });
});
