/**
 * The alarms as on-call meets them, in the sandbox: each condition made to happen, the
 * alarm firing and clearing, and its runbook's steps (docs/runbooks.md) followed as written.
 */
import type { Context, SQSEvent } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import { sqsMessageBody } from '../../functions/adapters/send-batcher.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import { makeDeliveryHandler } from '../../functions/delivery/process.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';
import { sqsRecord } from '../support/sqs-events.ts';

const LAMBDA_CONTEXT = { functionName: 'delivery', awsRequestId: 'r', getRemainingTimeInMillis: () => 10_000 } as unknown as Context;

let sandbox: Sandbox;
let receiver: Receiver;

// Alarm periods shrunk 100×: a 5-minute period is 3 s. One attempt a delivery, then a dead letter.
withSandbox(
  { canary: false, alarmTimeScale: 0.01, config: { retryScheduleSeconds: [0], objectQueueCap: 20, switchCacheMs: 500 } },
  (s, r) => {
    [sandbox, receiver] = [s, r];
  },
);

const admin = () => ({ key: sandbox.adminKey });

async function alarmState(name: string): Promise<string> {
  const response = await call(sandbox, 'GET', '/v1/admin/alarms', admin());
  return response.body.data.find((a: { name: string }) => a.name === name)?.state;
}

/** The alarms that page in ALARM, but canary-stale: this sandbox runs no canary. */
function paging(alarms: Array<{ name: string; state: string; severity: string }>): string[] {
  return alarms.filter((a) => a.state === 'ALARM' && a.severity === 'page' && a.name !== 'canary-stale').map((a) => a.name);
}

/** Polls the alarm until it is in `state`; answers how long that took (ms). */
async function until(name: string, state: 'OK' | 'ALARM', timeoutMs = 15_000): Promise<number> {
  const started = Date.now();
  while ((await alarmState(name)) !== state) {
    if (Date.now() - started > timeoutMs) throw new Error(`${name} not ${state} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return Date.now() - started;
}

describe('alarms, made to fire in the sandbox and followed through their runbooks', () => {
  it("wakes nobody for customers' own doings: an app retrying past its object's limits, an endpoint answering 500, a webhook deleted with held deliveries", async () => {
    const tenant = await createTenant(sandbox, 'ordinary');
    // An endpoint that answers its ping, then 500 to everything: each delivery dead-letters
    // after its one attempt (this sandbox's schedule), and the fifth failure quarantines it.
    receiver.answer('/down', { status: 500, pings: 200 });
    const down = await createWebhook(sandbox, tenant.key, { resource: 'doc:10', url: `${receiver.url}/down` });
    for (let n = 0; n < 8; n++) await publish(sandbox, tenant.key, [{ resource: 'doc:10', type: 'doc.changed', data: { n } }]);
    await until('deliveries-dead-lettered', 'ALARM');
    // An app that sends again at once on each 429: far past its object's rate and cap.
    const batch = Array.from({ length: 100 }, (_, n) => ({ resource: 'doc:11', type: 'doc.changed', data: { n } }));
    for (let round = 0; round < 12; round++) await Promise.all([publish(sandbox, tenant.key, batch), publish(sandbox, tenant.key, batch)]);
    await until('events-rejected-or-dropped', 'ALARM');
    // Its owner deletes the webhook that holds its deliveries.
    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${down.id}`, { key: tenant.key })).status).toBe(204);

    const alarms = (await call(sandbox, 'GET', '/v1/admin/alarms', admin())).body.data;
    const firing = (severity: string) =>
      alarms
        .filter((a: { state: string; severity: string }) => a.state === 'ALARM' && a.severity === severity)
        .map((a: { name: string }) => a.name);
    expect(firing('ticket')).toEqual(expect.arrayContaining(['deliveries-dead-lettered', 'events-rejected-or-dropped']));
    expect(paging(alarms)).toEqual([]);
  }, 40_000);

  it('webhook-disabled fires for a 410, its owner is told, and it clears after its period', async () => {
    const tenant = await createTenant(sandbox, 'gone');
    receiver.answer('/gone', { status: 410, pings: 200 });
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'doc:1', url: `${receiver.url}/gone` });
    expect(await alarmState('webhook-disabled')).toBe('OK');

    await publish(sandbox, tenant.key, [{ resource: 'doc:1', type: 'doc.changed', data: {} }]);

    await until('webhook-disabled', 'ALARM');
    // A customer's endpoint: a ticket for working hours, not a page.
    const alarms = (await call(sandbox, 'GET', '/v1/admin/alarms', admin())).body.data;
    expect(alarms.find((a: { name: string }) => a.name === 'webhook-disabled')).toMatchObject({ severity: 'ticket' });
    expect(paging(alarms)).toEqual([]);
    // The disable is counted in its write's step, and the notice published just after it.
    let notices: unknown;
    for (const started = Date.now(); !JSON.stringify(notices ?? '').includes(hook.id) && Date.now() - started < 5_000; ) {
      notices = (await call(sandbox, 'GET', '/sandbox/notifications')).body;
      if (!JSON.stringify(notices).includes(hook.id)) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(JSON.stringify(notices)).toContain(hook.id);
    const health = (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health;
    expect(health).toMatchObject({ state: 'disabled', last_failure: { status_code: 410 } });
    await until('webhook-disabled', 'OK');
  }, 30_000);

  it('says since when an alarm fired, not since the first look at it after', async () => {
    const tenant = await createTenant(sandbox, 'gone-unwatched');
    receiver.answer('/gone-unwatched', { status: 410, pings: 200 });
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'doc:4', url: `${receiver.url}/gone-unwatched` });
    expect(await alarmState('webhook-disabled')).toBe('OK');

    // Disabled while nobody looks at the alarms; on-call looks 2 s later.
    await publish(sandbox, tenant.key, [{ resource: 'doc:4', type: 'doc.changed', data: {} }]);
    let disabledAt: number | undefined;
    for (const started = Date.now(); disabledAt === undefined && Date.now() - started < 10_000; ) {
      const notices = (await call(sandbox, 'GET', '/sandbox/notifications')).body.data as Array<{ webhook: string; at: string }>;
      const notice = notices.find((n) => n.webhook === hook.id);
      if (notice) disabledAt = Date.parse(notice.at);
      else await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(disabledAt).toBeDefined();
    await new Promise((resolve) => setTimeout(resolve, 2_000));

    const alarm = (await call(sandbox, 'GET', '/v1/admin/alarms', admin())).body.data.find(
      (a: { name: string }) => a.name === 'webhook-disabled',
    );
    expect(alarm.state).toBe('ALARM');
    // Within the monitor's look (10 s × the time scale) of the disable, as CloudWatch's minute evaluations.
    expect(Date.parse(alarm.since) - (disabledAt as number)).toBeLessThan(1_000);
    await until('webhook-disabled', 'OK');
  }, 30_000);

  it('deliveries-dead-lettered files a ticket for a delivery that used up its retries; the runbook lists it, replays it, and the alarm clears', async () => {
    const tenant = await createTenant(sandbox, 'failing');
    receiver.answer('/failing', { status: 500, pings: 200 });
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'doc:2', url: `${receiver.url}/failing` });

    await publish(sandbox, tenant.key, [{ resource: 'doc:2', type: 'doc.changed', data: { n: 1 } }]);

    await until('deliveries-dead-lettered', 'ALARM');
    // A customer's endpoint: nothing pages for it.
    const alarms = (await call(sandbox, 'GET', '/v1/admin/alarms', admin())).body.data;
    expect(alarms.find((a: { name: string }) => a.name === 'deliveries-dead-lettered')).toMatchObject({ severity: 'ticket' });
    expect(paging(alarms)).toEqual([]);
    const letters = await call(sandbox, 'GET', `/v1/webhooks/${hook.id}/dead-letters`, { key: tenant.key });
    expect(letters.body.data).toHaveLength(1);
    receiver.answer('/failing', 200);
    const replay = await call(sandbox, 'POST', `/v1/webhooks/${hook.id}/dead-letters/replay`, { key: tenant.key });
    expect(replay.body).toMatchObject({ deliveries: 1, events: 1 });
    await receiver.waitFor(() => receiver.acceptedEvents('/failing').length === 1, 10_000);
    await until('deliveries-dead-lettered', 'OK');
  }, 30_000);

  it('delivery-backlog-age fires for deliveries received over 5 minutes after they were due, in 2 of 3 periods, and clears', async () => {
    const tenant = await createTenant(sandbox, 'late');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'doc:4', url: `${receiver.url}/late` });
    // Received 400 s past their due time, as SQS hands over a message sent 700 s ago with
    // a 300 s delay: given to the sandbox's delivery function as Lambda's poller gives it.
    // (A message sent now with an old due time is a dead-letter redrive, late from now.)
    const delivery = makeDeliveryHandler(deliveryDeps(sandbox.wiring, sandbox.notifier));
    const late = (n: number) => {
      const now = Date.now();
      const record = sqsRecord(
        sqsMessageBody({
          deliveryId: `msg_late${n}`,
          tenantId: tenant.id,
          webhookId: hook.id,
          events: [deliveredEventFixture({ id: `evt_late${n}`, seq: n, resource: 'doc:4' })],
          attempt: 1,
          dueAt: now - 400_000,
        }),
        { SentTimestamp: String(now - 700_000), ApproximateFirstReceiveTimestamp: String(now) },
      );
      return delivery({ Records: [record] } as SQSEvent, LAMBDA_CONTEXT);
    };

    await late(1);
    await receiver.waitFor(() => receiver.acceptedEvents('/late').length === 1, 10_000);
    expect(await alarmState('delivery-backlog-age')).toBe('OK');
    await new Promise((resolve) => setTimeout(resolve, 700));
    await late(2);
    await receiver.waitFor(() => receiver.acceptedEvents('/late').length === 2, 10_000);

    await until('delivery-backlog-age', 'ALARM', 2_000);
    await until('delivery-backlog-age', 'OK');
  }, 30_000);

  it("files no ticket for a slow moment (a receiver's cold start): its burst waits seconds for the slow pace, never 15 minutes", async () => {
    const tenant = await createTenant(sandbox, 'cold');
    // The receiver answers in 3 s for its first 6 seconds (the ping at once), then at once.
    let slowUntil = Number.POSITIVE_INFINITY;
    receiver.answer('/cold', async ({ ping }) => {
      if (!ping && Date.now() < slowUntil) await new Promise((resolve) => setTimeout(resolve, 3_000));
      return 200;
    });
    await createWebhook(sandbox, tenant.key, { resource: 'cold:0', url: `${receiver.url}/cold` });
    const event = (n: number) => ({ resource: `cold:${n}`, parents: ['cold:0'], type: 'doc.changed', data: { n } });
    const delayed = () => sandbox.metrics.total('DeliveriesDelayed', { reason: 'endpoint_rate' });
    const [delayedBefore, farBefore] = [delayed(), sandbox.metrics.total('DeliveriesPacedFarAhead')];
    slowUntil = Date.now() + 6_000;
    await publish(sandbox, tenant.key, [event(0)]);
    await receiver.waitFor(() => receiver.acceptedEvents('/cold').length === 1, 10_000);

    // Deliveries come faster than it takes them while it is slow (a POST takes 300 ms of
    // its time): 30, one every 50 ms (one at a time, so that few are merged into one delivery).
    for (let n = 1; n <= 30; n++) {
      await publish(sandbox, tenant.key, [event(n)]);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await receiver.waitFor(() => receiver.acceptedEvents('/cold').length === 31, 30_000);

    // They waited for the slow pace, seconds each, and none over 15 minutes.
    expect(delayed() - delayedBefore).toBeGreaterThan(0);
    expect(sandbox.metrics.total('DeliveriesPacedFarAhead') - farBefore).toBe(0);
    expect(await alarmState('endpoint-backlog-far-ahead')).toBe('OK');
  }, 45_000);

  it('endpoint-backlog-far-ahead files a ticket for a slow endpoint whose deliveries are held for a backlog over 15 minutes long; a pause on its webhook, as the runbook says, clears it', async () => {
    const tenant = await createTenant(sandbox, 'far');
    receiver.answer('/far', async ({ ping }) => {
      if (!ping) await new Promise((resolve) => setTimeout(resolve, 1_200));
      return 200;
    });
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'far:0', url: `${receiver.url}/far` });
    const event = (n: number) => ({ resource: `far:${n}`, parents: ['far:0'], type: 'doc.changed', data: { n } });
    // Its first delivery answers in 1.2 s: slow, a POST takes 120 ms of its time from now on.
    await publish(sandbox, tenant.key, [event(0)]);
    await receiver.waitFor(() => receiver.acceptedEvents('/far').length === 1, 10_000);
    // Its time is taken 20 minutes ahead, as the backlog of the deliveries that came
    // faster than that for the last hours would have it.
    const { paces } = deliveryDeps(sandbox.wiring, sandbox.notifier);
    await paces.reserve(hook.id, 20 * 60_000, Date.now());
    const farBefore = sandbox.metrics.total('DeliveriesPacedFarAhead');

    // Its deliveries keep coming: each held (in DynamoDB, under the held cap) rather than
    // given a time 20 minutes ahead, in every period of five.
    let n = 1;
    const publishing = async (until: () => Promise<boolean>) => {
      for (const started = Date.now(); !(await until()); n++) {
        if (Date.now() - started > 30_000) throw new Error('the alarm did not change state in 30 s');
        await publish(sandbox, tenant.key, [event(n)]);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };
    await publishing(async () => (await alarmState('endpoint-backlog-far-ahead')) === 'ALARM');
    expect(sandbox.metrics.total('DeliveriesPacedFarAhead') - farBefore).toBeGreaterThanOrEqual(5);
    // One tenant's endpoint: a ticket, and nothing pages for it.
    const alarms = (await call(sandbox, 'GET', '/v1/admin/alarms', admin())).body.data;
    expect(alarms.find((a: { name: string }) => a.name === 'endpoint-backlog-far-ahead')).toMatchObject({ severity: 'ticket' });
    expect(paging(alarms)).toEqual([]);
    expect(receiver.acceptedEvents('/far')).toHaveLength(1);
    const held = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held;
    const heldBefore = await held();
    expect(heldBefore).toBeGreaterThanOrEqual(5);

    // The runbook's lever until the tenant fixes it: a pause on the webhook holds what comes, and the alarm clears.
    const pause = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'pause', reason: 'endpoint far behind' },
    });
    expect(pause.status).toBe(200);
    await publishing(async () => (await alarmState('endpoint-backlog-far-ahead')) === 'OK');
    for (const started = Date.now(); (await held()) === heldBefore && Date.now() - started < 10_000; ) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(await held()).toBeGreaterThan(heldBefore);
  }, 60_000);

  it('object-queue-near-cap fires at the reconciler report of a paused object past 80 % of its cap, and clears at the report after it drained', async () => {
    const tenant = await createTenant(sandbox, 'deep');
    await createWebhook(sandbox, tenant.key, { resource: 'doc:3', url: `${receiver.url}/deep` });
    const pause = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'resource', tenant: tenant.id, target: 'doc:3', action: 'pause', reason: 'test' },
    });
    expect(pause.status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const events = Array.from({ length: 17 }, (_, n) => ({ resource: 'doc:3', type: 'doc.changed', data: { n } }));
    expect((await publish(sandbox, tenant.key, events)).status).toBe(202);

    await sandbox.reconcile();
    await until('object-queue-near-cap', 'ALARM');
    // An object on-call paused: a ticket, and nothing pages for it.
    const alarms = (await call(sandbox, 'GET', '/v1/admin/alarms', admin())).body.data;
    expect(alarms.find((a: { name: string }) => a.name === 'object-queue-near-cap')).toMatchObject({ severity: 'ticket' });
    expect(paging(alarms)).toEqual([]);
    const queues = (await call(sandbox, 'GET', '/v1/admin/queues?limit=20', admin())).body.data;
    expect(queues[0]).toMatchObject({ tenant: tenant.id, resource: 'doc:3', depth: 17 });

    await call(sandbox, 'DELETE', `/v1/admin/switches/${pause.body.id}`, admin());
    await receiver.waitFor(() => receiver.acceptedEvents('/deep').length === 17, 15_000);
    await sandbox.reconcile();
    await until('object-queue-near-cap', 'OK');
  }, 40_000);
});
