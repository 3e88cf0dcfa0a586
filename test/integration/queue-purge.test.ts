/**
 * On-call purges a queue by accident (SQS PurgeQueue, as the console's "Purge" sends it):
 * what the pipeline does with the work whose only trace was a message in it.
 */
import { GetQueueAttributesCommand, PurgeQueueCommand, SendMessageCommand } from '@aws-sdk/client-sqs';
import { describe, expect, it } from 'vitest';
import { sqsClient } from '../../functions/adapters/aws.ts';
import { WebhookStore } from '../../functions/adapters/webhook-store.ts';
import { DELIVER_QUEUE, DISTRIBUTE_QUEUE } from '../../functions/definitions/queues.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox(
  {
    canary: false,
    // A quick quarantine and probe: two failures quarantine, a probe every 2 s.
    config: {
      quarantineAfterFailures: 2,
      probeIntervalMinSeconds: 2,
      probeIntervalMaxSeconds: 2,
      stuckAfterMs: 2_000,
      reconcileIntervalSeconds: 3,
    },
  },
  (s, r) => {
    [sandbox, receiver] = [s, r];
  },
);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function purge(logicalName: string): Promise<void> {
  const url = sandbox.queues[logicalName]?.url as string;
  await sqsClient(sandbox.emulators.sqs).send(new PurgeQueueCommand({ QueueUrl: url }));
}

/** Messages waiting out their delay in a queue. */
async function delayed(logicalName: string): Promise<number> {
  const { Attributes } = await sqsClient(sandbox.emulators.sqs).send(
    new GetQueueAttributesCommand({ QueueUrl: sandbox.queues[logicalName]?.url, AttributeNames: ['ApproximateNumberOfMessagesDelayed'] }),
  );
  return Number(Attributes?.ApproximateNumberOfMessagesDelayed);
}

describe('the distribute queue purged', () => {
  it('delivers every accepted event of the objects whose doorbells it took, rung by the reconciler', { timeout: 90_000 }, async () => {
    const tenant = await createTenant(sandbox, 'doorbells');
    await createWebhook(sandbox, tenant.key, { resource: 'proj:1', url: `${receiver.url}/doorbells` });
    const accepted = new Set<string>();
    let publishing = true;
    // Purged again and again while the events come: some doorbells are taken before any turn.
    const purging = (async () => {
      while (publishing) await purge(DISTRIBUTE_QUEUE.logicalName);
    })();
    for (let round = 0; round < 10; round++) {
      const events = Array.from({ length: 50 }, (_, i) => ({
        resource: `task:${round}-${i}`,
        parents: ['proj:1'],
        type: 'task.changed',
        data: i,
      }));
      const answer = await publish(sandbox, tenant.key, events);
      for (const e of answer.body.events) if (e.status === 'accepted') accepted.add(e.id);
    }
    publishing = false;
    await purging;
    await receiver.waitFor(() => {
      const got = new Set(receiver.acceptedEvents('/doorbells').map((e) => e.id));
      return [...accepted].every((id) => got.has(id));
    }, 60_000);
    expect(sandbox.metrics.total('StuckObjectsRerung')).toBeGreaterThan(0);
  });
});

describe('the deliver queue purged while a delivery waits for its retry', () => {
  it('loses the delivery, which a replay since it sends again', { timeout: 90_000 }, async () => {
    const tenant = await createTenant(sandbox, 'retrying');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'doc:2', url: `${receiver.url}/retrying` });
    const since = new Date().toISOString();
    receiver.answer('/retrying', 500);
    const accepted = (await publish(sandbox, tenant.key, [{ resource: 'doc:2', type: 'doc.changed', data: 2 }])).body.events[0].id;
    await receiver.waitFor(() => receiver.deliveries('/retrying').length === 1, 10_000);
    // Its retry waits out 5 s in the deliver queue, once the failed attempt's record sent it there.
    for (let i = 0; i < 100 && (await delayed(DELIVER_QUEUE.logicalName)) === 0; i++) await sleep(20);
    expect(await delayed(DELIVER_QUEUE.logicalName)).toBe(1);
    await purge(DELIVER_QUEUE.logicalName);
    receiver.answer('/retrying', 200);
    await sleep(8_000);
    expect(receiver.acceptedEvents('/retrying')).toEqual([]);

    const replay = await call(sandbox, 'POST', `/v1/webhooks/${hook.id}/replay`, { key: tenant.key, body: { since } });
    expect(replay.status).toBe(202);
    await receiver.waitFor(() => receiver.acceptedEvents('/retrying').some((e) => e.id === accepted), 10_000);
  });
});

describe('the deliver queue purged while a webhook is quarantined', () => {
  it('takes its probes for 20 minutes; re-enabling the webhook with its tenant key releases what it holds at once', {
    timeout: 90_000,
  }, async () => {
    const tenant = await createTenant(sandbox, 'purged');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'doc:1', url: `${receiver.url}/purged` });
    const health = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health;
    receiver.answer('/purged', 500);
    const accepted = (await publish(sandbox, tenant.key, [{ resource: 'doc:1', type: 'doc.changed', data: 1 }])).body.events[0].id;
    let state = '';
    for (let i = 0; i < 200 && state !== 'quarantined'; i++, await sleep(100)) state = (await health()).state;
    expect(state).toBe('quarantined');
    expect((await health()).held).toBe(1);

    // The probe chain's message waits out its delay in the deliver queue: the purge takes it.
    for (let i = 0; i < 100 && (await delayed(DELIVER_QUEUE.logicalName)) === 0; i++) await sleep(20);
    await purge(DELIVER_QUEUE.logicalName);
    receiver.answer('/purged', 200);
    await sleep(6_000);
    // Nothing probes a webhook that gets no new deliveries before its chain is overdue by
    // CHAIN_LOST_AFTER_MS (20 minutes): the reconciler's check starts it again then
    // (lost-chains.test.ts). Its owner need not wait for that.
    expect((await health()).state).toBe('quarantined');

    const patched = await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'active' } });
    expect(patched.status).toBe(200);
    await receiver.waitFor(() => receiver.acceptedEvents('/purged').some((e) => e.id === accepted), 10_000);
    for (let i = 0; i < 100 && (await health()).held > 0; i++) await sleep(100);
    expect((await health()).held).toBe(0);
  });
});

describe('a probe sent back to the deliver queue (a dead-letter redrive)', () => {
  it('is ignored once a newer chain took over, and goes on with its chain while it is current', { timeout: 90_000 }, async () => {
    const tenant = await createTenant(sandbox, 'redriven');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'doc:3', url: `${receiver.url}/redriven` });
    const health = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health;
    const webhooks = new WebhookStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const redrive = (token: string) =>
      sqsClient(sandbox.emulators.sqs).send(
        new SendMessageCommand({
          QueueUrl: sandbox.queues[DELIVER_QUEUE.logicalName]?.url,
          MessageBody: JSON.stringify({ kind: 'probe', tenantId: tenant.id, webhookId: hook.id, token }),
          MessageGroupId: tenant.id,
        }),
      );
    receiver.answer('/redriven', 500);
    const accepted = (await publish(sandbox, tenant.key, [{ resource: 'doc:3', type: 'doc.changed', data: 3 }])).body.events[0].id;
    let state = '';
    for (let i = 0; i < 200 && state !== 'quarantined'; i++, await sleep(100)) state = (await health()).state;
    expect(state).toBe('quarantined');
    for (let i = 0; i < 100 && (await delayed(DELIVER_QUEUE.logicalName)) === 0; i++) await sleep(20);
    await purge(DELIVER_QUEUE.logicalName);
    const token = (await webhooks.get(tenant.id, hook.id))?.probeToken as string;
    receiver.answer('/redriven', 200);

    await redrive('an-older-chain');
    await sleep(3_000);
    expect(receiver.probes('/redriven')).toEqual([]);
    expect((await health()).state).toBe('quarantined');

    await redrive(token);
    await receiver.waitFor(() => receiver.acceptedEvents('/redriven').some((e) => e.id === accepted), 15_000);
    expect(receiver.probes('/redriven').length).toBe(1);
    expect((await health()).state).toBe('healthy');
  });
});

describe('a delivery sent back to the deliver queue after its webhook was deleted', () => {
  it('is dropped and counted as the owner’s doing', { timeout: 30_000 }, async () => {
    const tenant = await createTenant(sandbox, 'deleted');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'doc:4', url: `${receiver.url}/deleted` });
    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(204);
    const before = sandbox.metrics.total('EventsDiscardedByOwner');
    const event = {
      id: 'evt_redriven',
      seq: 1,
      resource: 'doc:4',
      parents: [],
      type: 'doc.changed',
      data: {},
      created_at: new Date().toISOString(),
    };
    await sqsClient(sandbox.emulators.sqs).send(
      new SendMessageCommand({
        QueueUrl: sandbox.queues[DELIVER_QUEUE.logicalName]?.url,
        MessageBody: JSON.stringify({ tenantId: tenant.id, webhookId: hook.id, deliveryId: 'msg_redriven', events: [event], attempt: 4 }),
        MessageGroupId: tenant.id,
      }),
    );
    for (let i = 0; i < 100 && sandbox.metrics.total('EventsDiscardedByOwner') === before; i++) await sleep(100);
    expect(sandbox.metrics.total('EventsDiscardedByOwner')).toBe(before + 1);
    expect(receiver.deliveries('/deleted')).toEqual([]);
  });
});
