/**
 * The per-endpoint rate: deliveries to a busy endpoint are spread over time, never
 * failed; a slow endpoint gets a share of its time that follows its answer time, so
 * few of its POSTs are under way at once, and its backlog is held and released packed.
 * Held deliveries themselves are in held-deliveries.test.ts.
 */
import { describe, expect, it } from 'vitest';
import type { SendResult } from '../../functions/adapters/webhook-sender.ts';
import { startRelease } from '../../functions/app/delivery/chains.ts';
import type { DeliveryDeps } from '../../functions/app/delivery/deps.ts';
import { applyHealth } from '../../functions/app/delivery/health.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import type { DeliveryMessage, ReleaseMessage } from '../../functions/core/model.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import { holdDelivery, QUICK_HOLDS } from '../support/held.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';
import { deliveryDepsAt } from '../support/services.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ config: QUICK_HOLDS }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

const okEvents = (path: string) => receiver.acceptedEvents(path);
/** Delivery deps at another time (see deliveryDepsAt). */
const later = (offsetMs: number, send?: DeliveryDeps['send']) => deliveryDepsAt(sandbox, offsetMs, send);

describe('per-endpoint rate', () => {
  it('spreads deliveries to one endpoint over time instead of failing them', async () => {
    const tenant = await createTenant(sandbox, 'busy');
    await createWebhook(sandbox, tenant.key, { resource: 'b:0', url: `${receiver.url}/busy` });
    const delayed = sandbox.metrics.total('DeliveriesDelayed');
    const started = Date.now();
    // One request each, apart: events that reach one distributor invocation together
    // would be merged into one delivery, and this is about many deliveries.
    for (let i = 0; i < 9; i++) {
      await publish(sandbox, tenant.key, [{ resource: `b:${i + 1}`, parents: ['b:0'], type: 'a.b', data: i }]);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await receiver.waitFor(() => okEvents('/busy').length === 9, 20_000);
    const arrivals = receiver.received.filter((d) => d.path === '/busy' && d.answered === 200).map((d) => d.at - started);
    expect(arrivals.length).toBeGreaterThanOrEqual(7);
    // 3 per second: seven or more deliveries need at least two seconds, and some were delayed.
    expect(Math.max(...arrivals)).toBeGreaterThanOrEqual(1_900);
    expect(sandbox.metrics.total('DeliveriesDelayed')).toBeGreaterThan(delayed);
    expect(new Set(okEvents('/busy').map((e) => e.data))).toEqual(new Set([0, 1, 2, 3, 4, 5, 6, 7, 8]));
  }, 30_000);

  it('gives each delivery of a backlog its time once: it waits in the queue for it, then goes without asking again', async () => {
    const tenant = await createTenant(sandbox, 'paced');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'p:0', url: `${receiver.url}/paced` });
    const message = (i: number): DeliveryMessage => ({
      deliveryId: `msg_p${i}`,
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: `evt_p${i}`, seq: i + 1, resource: 'p:1', parents: ['p:0'], data: i })],
      attempt: 1,
    });
    const { deps, sent } = later(0);

    const outcomes = await Promise.all(Array.from({ length: 10 }, (_, i) => handleDeliverMessage(deps, message(i))));

    // 3 POSTs/s and a second's burst: 3 go now; the other 7 were given times a third
    // of a second apart and went back to the queue once, to wait for them.
    expect(outcomes.filter((o) => o === 'delivered')).toHaveLength(3);
    expect(outcomes.filter((o) => o === 'throttled')).toHaveLength(7);
    const waiting = sent.splice(0) as DeliveryMessage[];
    const times = waiting.map((m) => m.sendAt ?? Number.NaN).sort((a, b) => a - b);
    expect(times.slice(1).map((t, i) => Math.round(t - (times[i] as number)))).toEqual(Array(6).fill(333));
    // Waiting for the endpoint's time is no attempt: none of their retry budget is spent.
    expect(waiting.map((m) => m.attempt)).toEqual(Array(7).fill(1));

    // Back when their times have come, even five minutes late (a slow deliver queue),
    // they go without asking for another.
    const { deps: late, sent: again } = later(300_000);
    expect(await Promise.all(waiting.map((m) => handleDeliverMessage(late, m)))).toEqual(Array(7).fill('delivered'));
    expect(again).toEqual([]);
    await receiver.waitFor(() => okEvents('/paced').length === 10, 5_000);
  });

  it('keeps no share of the pace through a wait for anything else: the endpoint asked to be left alone', async () => {
    const tenant = await createTenant(sandbox, 'paced-then-429');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'q:0', url: `${receiver.url}/paced-429` });
    const { deps, sent } = later(0);
    // The endpoint answered 429 with Retry-After: 30 to another delivery.
    await deps.webhooks.leaveAloneUntil(tenant.id, hook.id, Date.now() + 30_000, `${receiver.url}/paced-429`);
    const paced: DeliveryMessage = {
      deliveryId: 'msg_q1',
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: 'evt_q1', seq: 1, resource: 'q:1', parents: ['q:0'], data: 1 })],
      attempt: 1,
      sendAt: Date.now() + 500,
    };

    expect(await handleDeliverMessage(deps, paced)).toBe('throttled');

    // It waits for the endpoint, and reserves a share again when it comes back; the wait is no attempt (none of its retry budget).
    expect(sent).toHaveLength(1);
    expect((sent[0] as DeliveryMessage).sendAt).toBeUndefined();
    expect((sent[0] as DeliveryMessage).attempt).toBe(1);
  });

  it('keeps the pace of an endpoint that was not slow through a new URL: its backlog and new deliveries do not go together at twice its rate', async () => {
    const tenant = await createTenant(sandbox, 'over-rate-moved');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'om:0', url: `${receiver.url}/over-rate` });
    const message = (i: number): DeliveryMessage => ({
      deliveryId: `msg_om${i}`,
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: `evt_om${i}`, seq: i + 1, resource: 'om:1', parents: ['om:0'], data: i })],
      attempt: 1,
    });
    const { deps } = later(32_000_000);
    // 15 deliveries at 3 a second: 3 go, and 12 wait with times up to 4 s ahead.
    const outcomes = await Promise.all(Array.from({ length: 15 }, (_, i) => handleDeliverMessage(deps, message(i))));
    expect(outcomes.filter((o) => o === 'throttled')).toHaveLength(12);

    const moved = await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, {
      key: tenant.key,
      body: { url: `${receiver.url}/over-rate-new` },
    });
    expect(moved.status).toBe(200);

    // The backlog goes to the new URL at its times: a new delivery waits behind it, not beside it.
    expect(await handleDeliverMessage(deps, message(15))).toBe('throttled');
  });

  it('keeps a delivery waiting for its time to that time through every look of its wait, however late SQS brings each look', async () => {
    const tenant = await createTenant(sandbox, 'paced-looks');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'pl:0', url: `${receiver.url}/paced-looks` });
    const { deps } = later(30_000_000);
    // A delivery was given a time 15 minutes ahead, behind a backlog at the endpoint's rate.
    await deps.paces.reserve(hook.id, 901_000, deps.now());
    const sendAt = deps.now() + 900_000;
    let message: DeliveryMessage = {
      deliveryId: 'msg_pl1',
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: 'evt_pl1', seq: 1, resource: 'pl:1', parents: ['pl:0'], data: 1 })],
      attempt: 1,
      sendAt,
      paceMs: 1000 / 3,
    };

    // It looks again after half of its wait each time (five times in all), and SQS brings
    // each look back 0.4 s after its delay.
    let arrives = deps.now();
    for (let looks = 0; ; looks++) {
      expect(looks).toBeLessThanOrEqual(5);
      const step = later(arrives - Date.now());
      if ((await handleDeliverMessage(step.deps, message)) === 'delivered') break;
      message = step.sent[0] as DeliveryMessage;
      arrives += (step.delays[0] ?? 0) * 1000 + 400;
    }

    // It goes within a second (SQS delays are whole seconds) and the last look's 0.4 s of
    // its time: a look that came late does not put the ones after it later still.
    expect(arrives - sendAt).toBeGreaterThanOrEqual(0);
    expect(arrives - sendAt).toBeLessThan(1_400);
  });
});

describe('a slow endpoint', () => {
  it('gets a share of its time that follows its answer time, so few of its POSTs are under way at once; a quick answer and a new URL give its rate back', async () => {
    const tenant = await createTenant(sandbox, 'slow');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 's:0', url: `${receiver.url}/slowly` });
    receiver.answer('/slowly', async () => {
      await new Promise((resolve) => setTimeout(resolve, 1_200));
      return 200;
    });
    const message = (i: number): DeliveryMessage => ({
      deliveryId: `msg_slow${i}`,
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: `evt_slow${i}`, seq: i + 1, resource: 's:1', parents: ['s:0'], data: i })],
      attempt: 1,
    });
    // 50 POSTs a second, and time enough for a 1.2 s answer.
    const at = (offsetMs: number) => {
      const { deps, sent } = later(offsetMs);
      return { deps: { ...deps, config: { ...sandbox.config, endpointRatePerSecond: 50, deliveryTimeoutMs: 5_000 } }, sent };
    };
    expect(await handleDeliverMessage(at(0).deps, message(0))).toBe('delivered');
    // Noted at a second unanswered; the 1.2 s answer is within a quarter of it.
    const slowMs = (await at(0).deps.webhooks.get(tenant.id, hook.id))?.slowMs ?? 0;
    expect(slowMs).toBeGreaterThanOrEqual(1_000);
    expect(slowMs).toBeLessThan(2_000);

    // Later, on a free endpoint: each POST takes slowMs / 10 of its time, not 20 ms, and a
    // second's worth goes at once; the rest wait for their times, that far apart.
    const { deps, sent } = at(3_600_000);
    const outcomes = await Promise.all(Array.from({ length: 15 }, (_, i) => handleDeliverMessage(deps, message(i + 1))));
    const share = slowMs / 10;
    const atOnce = Math.floor((1_000 - share) / share) + 1;
    expect(outcomes.filter((o) => o === 'delivered')).toHaveLength(atOnce);
    const times = (sent as DeliveryMessage[]).map((m) => m.sendAt ?? Number.NaN).sort((a, b) => a - b);
    expect(times).toHaveLength(15 - atOnce);
    for (const [i, t] of times.slice(1).entries()) expect(t - (times[i] as number)).toBeCloseTo(share, 0);

    // One quick answer halves what was kept: under a second, it is gone.
    receiver.answer('/slowly', 200);
    expect(await handleDeliverMessage(at(7_200_000).deps, message(20))).toBe('delivered');
    expect((await deps.webhooks.get(tenant.id, hook.id))?.slowMs).toBeUndefined();

    // A new URL is another endpoint: what was kept of the old one goes.
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, `${receiver.url}/slowly`, 5_000);
    const patched = await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, {
      key: tenant.key,
      body: { url: `${receiver.url}/slowly-new` },
    });
    expect(patched.status).toBe(200);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.slowMs).toBeUndefined();
  }, 30_000);

  /** Delivery deps `offsetMs` from now, at 50 POSTs a second per endpoint. */
  const at = (offsetMs: number) => {
    const { deps, sent, delays } = later(offsetMs);
    return { deps: { ...deps, config: { ...sandbox.config, endpointRatePerSecond: 50, deliveryTimeoutMs: 5_000 } }, sent, delays };
  };
  /** As `at`, with room for 100 held deliveries a webhook (the cap here is 2). */
  const roomy = (offsetMs: number) => {
    const step = at(offsetMs);
    return { ...step, deps: { ...step.deps, config: { ...step.deps.config, heldPerWebhook: 100 } } };
  };
  const paced = (tenantId: string, webhookId: string, name: string) => (i: number) =>
    ({
      deliveryId: `msg_${name}${i}`,
      tenantId,
      webhookId,
      events: [deliveredEventFixture({ id: `evt_${name}${i}`, seq: i + 1, resource: `${name}:1`, parents: [`${name}:0`], data: i })],
      attempt: 1,
    }) satisfies DeliveryMessage;

  /**
   * A webhook on a new tenant `name` (resources `prefix:…`) whose endpoint answers in
   * `answerMs`, with its time taken for the next 15 minutes and a second, as seen
   * `offsetMs` from now: a delivery that has no share yet is held behind that.
   */
  const slowBacklog = async (name: string, prefix: string, answerMs: number, offsetMs: number) => {
    const tenant = await createTenant(sandbox, name);
    const url = `${receiver.url}/${name}`;
    const hook = await createWebhook(sandbox, tenant.key, { resource: `${prefix}:0`, url });
    const step = roomy(offsetMs);
    await step.deps.webhooks.noteSlowAnswers(tenant.id, hook.id, url, answerMs);
    await step.deps.paces.reserve(hook.id, 901_000, step.deps.now());
    return { ...step, tenant, url, hook, message: paced(tenant.id, hook.id, prefix) };
  };

  it('takes a share again, at the slow pace, when one reserved at the whole rate comes after the endpoint answered slowly', async () => {
    const tenant = await createTenant(sandbox, 'slowed');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'sd:0', url: `${receiver.url}/slowed` });
    const message = paced(tenant.id, hook.id, 'sd');
    // A backlog reaches the endpoint at its whole rate: two seconds of its time are taken
    // (the first share after a second's would come 20 ms on, which a loaded machine takes
    // to get to it), and 20 deliveries are given shares 20 ms apart, from a second on.
    const { deps, sent } = at(3_600_000);
    await deps.paces.reserve(hook.id, 2_000, deps.now());
    const outcomes = await Promise.all(Array.from({ length: 20 }, (_, i) => handleDeliverMessage(deps, message(i))));
    expect(outcomes).toEqual(Array(20).fill('throttled'));
    const waiting = sent.splice(0) as DeliveryMessage[];

    // The first POSTs answer in 9 s: a tenth of that is a POST's share from now on.
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, `${receiver.url}/slowed`, 9_000);

    // When their times come (the last 1.4 s on), they do not all go at once (each would
    // hold a delivery worker for 9 s): a part 20 / 900 of them keeps its share (here one
    // or none, by their ids), and the rest take shares at the slow pace, 900 ms apart,
    // the first 2.3 s on.
    const from = receiver.received.length;
    const { deps: due, sent: again } = at(3_601_500);
    const outcomes2 = await Promise.all(waiting.map((m) => handleDeliverMessage(due, m)));
    const went = outcomes2.filter((o) => o === 'delivered').length;
    expect(went).toBeLessThanOrEqual(1);
    expect(outcomes2.filter((o) => o === 'throttled')).toHaveLength(20 - went);
    expect(receiver.received.slice(from).filter((d) => d.path === '/slowed')).toHaveLength(went);
    const times = (again as DeliveryMessage[]).map((m) => m.sendAt ?? Number.NaN).sort((a, b) => a - b);
    expect(times).toHaveLength(20 - went);
    for (const [i, t] of times.slice(1).entries()) expect(t - (times[i] as number)).toBeCloseTo(900, 0);
  });

  it('keeps sending to a slow endpoint that answers more slowly still: of its backlog come due, the part its new pace allows goes', async () => {
    const tenant = await createTenant(sandbox, 'slower');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'st:0', url: `${receiver.url}/slower` });
    const message = paced(tenant.id, hook.id, 'st');
    // The endpoint answers in 9 s, and 30 deliveries take shares 900 ms apart, from a
    // second on (as the hours-long backlog of an endpoint slow for hours would, far on).
    const { deps, sent } = at(18_000_000);
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, `${receiver.url}/slower`, 9_000);
    await deps.paces.reserve(hook.id, 2_000, deps.now());
    expect(await Promise.all(Array.from({ length: 30 }, (_, i) => handleDeliverMessage(deps, message(i))))).toEqual(
      Array(30).fill('throttled'),
    );
    const waiting = sent.splice(0) as DeliveryMessage[];
    const lastShare = Math.max(...waiting.map((m) => m.sendAt ?? 0));

    // It answers in 12 s now: each POST takes 1.2 s of its time. When the 30 come due,
    // about 900 / 1,200 of them go at their times (so at about its pace now), where every
    // one took a share behind the backlog and nothing went to the endpoint for as long as
    // the backlog was (hours, for one slow for hours).
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, `${receiver.url}/slower`, 12_000);
    const from = receiver.received.length;
    const { deps: due, sent: again } = at(18_000_000 + 30_000);
    const outcomes = await Promise.all(waiting.map((m) => handleDeliverMessage(due, m)));
    const went = outcomes.filter((o) => o === 'delivered').length;
    expect(went).toBeGreaterThanOrEqual(15);
    expect(went).toBeLessThanOrEqual(28);
    expect(receiver.received.slice(from).filter((d) => d.path === '/slower')).toHaveLength(went);
    // The rest take shares at the new pace, behind the backlog's.
    const times = (again as DeliveryMessage[]).map((m) => m.sendAt ?? Number.NaN).sort((a, b) => a - b);
    expect(times).toHaveLength(30 - went);
    expect(times[0]).toBeGreaterThan(lastShare);
    for (const [i, t] of times.slice(1).entries()) expect(t - (times[i] as number)).toBeCloseTo(1_200, 0);
  });

  it('gives the backlog paced for its slow answers the whole rate back once it answers quickly, at its next look', async () => {
    const tenant = await createTenant(sandbox, 'sped-up');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'su:0', url: `${receiver.url}/sped-up` });
    const message = paced(tenant.id, hook.id, 'su');
    // The endpoint answered in 1.5 s, and its backlog took shares 14 minutes ahead (past
    // 15 minutes it would be held: see 'holds a slow endpoint's deliveries ...').
    const { deps, sent, delays } = at(7_200_000);
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, `${receiver.url}/sped-up`, 1_500);
    await deps.paces.reserve(hook.id, 840_000, deps.now());
    expect(await Promise.all([1, 2, 3].map((i) => handleDeliverMessage(deps, message(i))))).toEqual(Array(3).fill('throttled'));
    const waiting = sent.splice(0) as DeliveryMessage[];
    expect(waiting.every((m) => m.notBefore !== undefined)).toBe(true);
    // Each looks again after half its wait, 7 minutes, not after SQS's longest delay.
    for (const delay of delays) expect(delay).toBeOneOf([420, 421]);

    // A delivery whose time has come is answered quickly: the endpoint is slow no more.
    expect(await handleDeliverMessage(deps, { ...message(0), sendAt: deps.now() })).toBe('delivered');
    expect((await deps.webhooks.get(tenant.id, hook.id))?.slowMs).toBeUndefined();

    // The backlog's next look, 7 minutes on: it goes now, at the endpoint's whole rate,
    // not 14 minutes on at the slow pace.
    const { deps: next } = at(7_200_000 + 421_000);
    expect(await Promise.all(waiting.map((m) => handleDeliverMessage(next, m)))).toEqual(Array(3).fill('delivered'));
  });

  it('counts a delivery that takes a new time at its look, after the time was given back, as delayed once, not again', async () => {
    const tenant = await createTenant(sandbox, 'recounted');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'rc:0', url: `${receiver.url}/recounted` });
    const message = paced(tenant.id, hook.id, 'rc');
    const { deps, sent } = at(23_000_000);
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, `${receiver.url}/recounted`, 3_000);
    await deps.paces.reserve(hook.id, 600_000, deps.now());
    const delayed = () => sandbox.metrics.total('DeliveriesDelayed', { reason: 'endpoint_rate' });
    const before = delayed();
    expect(await Promise.all([1, 2].map((i) => handleDeliverMessage(deps, message(i))))).toEqual(['throttled', 'throttled']);
    expect(delayed() - before).toBe(2);
    const waiting = sent.splice(0) as DeliveryMessage[];

    // Quick again: its time given back, and new deliveries have taken the next five minutes and 3 s of it since.
    for (const i of [10, 11]) expect(await handleDeliverMessage(deps, { ...message(i), sendAt: deps.now() })).toBe('delivered');
    await deps.paces.reserve(hook.id, 303_000, deps.now());

    // At their looks, five minutes on, they take new times about 3 s later: the same delays, counted once.
    const { deps: next } = at(23_000_000 + 300_000);
    expect(await Promise.all(waiting.map((m) => handleDeliverMessage(next, m)))).toEqual(['throttled', 'throttled']);
    expect(delayed() - before).toBe(2);
  });

  it("counts a slow endpoint's deliveries held past 15 minutes ahead and names their webhook once a minute; not those a slow moment books minutes ahead", async () => {
    const tenant = await createTenant(sandbox, 'far-ahead');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'fa:0', url: `${receiver.url}/far-ahead` });
    const message = paced(tenant.id, hook.id, 'fa');
    const warned: Array<[string, Record<string, unknown>]> = [];
    const logger = {
      info: () => {},
      warn: (line: string, fields?: Record<string, unknown>) => void warned.push([line, fields ?? {}]),
      error: () => {},
    };
    const watched = (offsetMs: number) => {
      const step = roomy(offsetMs);
      return { ...step, deps: { ...step.deps, logger } };
    };
    const far = () => sandbox.metrics.total('DeliveriesPacedFarAhead');
    const lines = () => warned.filter(([line]) => line.startsWith('Deliveries wait over 15 minutes'));
    const before = far();
    // A slow moment: answers of 3 s (shares 300 ms apart), its time booked two minutes ahead.
    const { deps } = watched(28_800_000);
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, `${receiver.url}/far-ahead`, 3_000);
    await deps.paces.reserve(hook.id, 120_000, deps.now());
    expect(await handleDeliverMessage(deps, message(1))).toBe('throttled');
    expect(far() - before).toBe(0);
    expect(lines()).toEqual([]);

    // Its backlog has grown 15 minutes more: each delivery would wait 17 minutes, and is
    // held instead; the first for its share that far ahead, the others behind it. (A
    // second on: a container looks at the endpoint's time as it read it within a second.)
    await deps.paces.reserve(hook.id, 900_000, deps.now());
    const { deps: grown } = watched(28_800_000 + 1_000);
    for (const i of [2, 3, 4]) expect(await handleDeliverMessage(grown, message(i))).toBe('held');
    expect(far() - before).toBe(3);
    // One line for the webhook in the minute, the first delivery's.
    expect(lines()).toEqual([
      [
        expect.any(String),
        expect.objectContaining({ tenant: tenant.id, webhook: hook.id, answerMs: 3_000, paceMs: 300, held: 0, deliveries: 1 }),
      ],
    ]);
    expect(lines()[0]?.[1].waitSeconds).toBeGreaterThan(900);

    // A minute on, another: a line again, with the deliveries since the last one and how many are held.
    const { deps: minute } = watched(28_800_000 + 61_000);
    expect(await handleDeliverMessage(minute, message(5))).toBe('held');
    expect(far() - before).toBe(4);
    expect(lines()).toHaveLength(2);
    expect(lines()[1]?.[1]).toMatchObject({ webhook: hook.id, deliveries: 3, held: 3 });

    // Once its chain's time is under 15 minutes away, one held behind it is not counted.
    const { deps: nearer } = watched(28_800_000 + 200_000);
    expect(await handleDeliverMessage(nearer, message(6))).toBe('held');
    expect(far() - before).toBe(4);
    expect(lines()[1]?.[1].waitSeconds).toBeGreaterThan(900);
  });

  it("counts no delivery held behind a slow endpoint's release while its time is free: a release goes on while deliveries keep coming, and one that keeps up files no ticket", async () => {
    const tenant = await createTenant(sandbox, 'held-free');
    const url = `${receiver.url}/held-free`;
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'hf:0', url });
    const message = paced(tenant.id, hook.id, 'hf');
    const far = () => sandbox.metrics.total('DeliveriesPacedFarAhead');
    const before = far();
    // Answers of 3 s, then a failure that quarantines it (a single one does here): what comes is held.
    const { deps, sent } = roomy(43_200_000);
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, url, 3_000);
    const webhook = async () => (await deps.webhooks.get(tenant.id, hook.id)) as NonNullable<Awaited<ReturnType<typeof deps.webhooks.get>>>;
    await applyHealth(deps, await webhook(), { type: 'failure', now: deps.now(), statusCode: 500, error: 'HTTP 500' });
    expect((await webhook()).health.state).toBe('quarantined');
    expect(await handleDeliverMessage(deps, message(1))).toBe('held');

    // Its probe succeeds: the release starts, and a delivery that comes before its step is
    // held behind it, seconds, not 15 minutes: the endpoint's time is free.
    await applyHealth(deps, await webhook(), { type: 'probe_succeeded', now: deps.now() });
    expect(sent.filter((m) => (m as ReleaseMessage).kind === 'release')).toHaveLength(1);
    expect(await handleDeliverMessage(deps, message(2))).toBe('held');
    expect(far() - before).toBe(0);

    // Nor while its time is taken over 15 minutes ahead: the recovery's chain waits for no
    // time, and sends it at its next POST.
    const { deps: busy } = roomy(43_200_000 + 1_000);
    await busy.paces.reserve(hook.id, 901_000, busy.now());
    expect(await handleDeliverMessage(busy, message(3))).toBe('held');
    expect(far() - before).toBe(0);
  });

  it("counts a quick endpoint's deliveries held behind its time taken over 15 minutes ahead once each; not those given shares before, which go at them", async () => {
    const tenant = await createTenant(sandbox, 'far-quick');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'fq:0', url: `${receiver.url}/far-quick` });
    const message = paced(tenant.id, hook.id, 'fq');
    const far = () => sandbox.metrics.total('DeliveriesPacedFarAhead');
    const before = far();
    // Its time taken 17 minutes ahead (by a version that held no quick endpoint's backlog),
    // and three deliveries given shares in it before.
    const { deps, sent } = roomy(32_400_000);
    await deps.paces.reserve(hook.id, 1_020_000, deps.now());
    const booked = [1, 2, 3].map((i) => ({ ...message(i), sendAt: deps.now() + 1_000_000 + i, paceMs: 20 }));
    // New deliveries are held, behind a chain that waits for that time: each counted once.
    for (const i of [4, 5, 6]) expect(await handleDeliverMessage(deps, message(i))).toBe('held');
    expect(far() - before).toBe(3);
    expect(sent as ReleaseMessage[]).toMatchObject([{ kind: 'release' }]);
    expect(((sent[0] as ReleaseMessage).notBefore ?? 0) - deps.now()).toBeGreaterThan(1_000_000);

    // Those given shares before go at them, not behind what is held, and are not counted.
    const { deps: look } = roomy(32_400_000 + 62_000);
    expect(await Promise.all(booked.map((m) => handleDeliverMessage(look, m)))).toEqual(Array(3).fill('throttled'));
    expect(far() - before).toBe(3);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(3);
  });

  it("holds a quick endpoint's deliveries whose shares would be over 5 seconds ahead, and releases them packed at the first held one's share, after those given before", async () => {
    const tenant = await createTenant(sandbox, 'held-quick-rate');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'hr:0', url: `${receiver.url}/held-quick-rate` });
    const message = paced(tenant.id, hook.id, 'hr');
    const delayed = () => sandbox.metrics.total('DeliveriesDelayed', { reason: 'endpoint_rate' });
    const start = 33_000_000;
    const { deps, sent, delays } = roomy(start);
    // More than its whole rate (50 POSTs a second): its time taken for the next 5.9 s.
    await deps.paces.reserve(hook.id, 5_900, deps.now());
    const delayedBefore = delayed();
    // A delivery's share comes under 5 s ahead (less its second's burst): it waits for it.
    expect(await handleDeliverMessage(deps, message(0))).toBe('throttled');
    const [booked] = sent.splice(0) as DeliveryMessage[];
    expect((booked?.sendAt ?? 0) - deps.now()).toBeGreaterThan(4_500);
    delays.splice(0);
    // Deliveries at its whole rate meanwhile take 200 ms more: the next share would be past 5 s.
    await deps.paces.reserve(hook.id, 200, deps.now());
    for (const i of [1, 2, 3]) expect(await handleDeliverMessage(deps, message(i))).toBe('held');
    expect(delayed() - delayedBefore).toBe(1);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health).toMatchObject({
      state: 'healthy',
      held: 3,
    });
    // One chain, whose first step waits for the share the first held delivery took: after the one given before.
    expect(sent).toHaveLength(1);
    const release = sent[0] as ReleaseMessage;
    expect(release).toMatchObject({ kind: 'release', webhookId: hook.id });
    expect(release.notBefore).toBeGreaterThan(booked?.sendAt ?? Number.POSITIVE_INFINITY);
    expect(delays[0]).toBeGreaterThanOrEqual(5);
    expect(delays[0]).toBeLessThanOrEqual(6);

    // The one given its share before goes at it, though deliveries are held behind it.
    const { deps: due } = roomy(start + ((booked?.sendAt ?? 0) - deps.now()));
    expect(await handleDeliverMessage(due, booked as DeliveryMessage)).toBe('delivered');
    // At the held one's share, the chain sends what is held: in order, in one POST.
    const { deps: time } = roomy(start + ((release.notBefore ?? 0) - deps.now()) + 10);
    expect(await handleDeliverMessage(time, release)).toBe('released');
    const posts = receiver.received.filter((r) => r.path === '/held-quick-rate' && r.json.events[0]?.type !== 'webhook.ping');
    expect(posts.map((r) => r.json.events.map((e) => e.data))).toEqual([[0], [1, 2, 3]]);
  });

  it("holds a quick endpoint's delivery past 5 seconds behind a new chain that waits for its share, when the chain it found holds nothing, not behind that chain's next step", async () => {
    const tenant = await createTenant(sandbox, 'held-quick-drained');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'hd:0', url: `${receiver.url}/held-quick-drained` });
    const message = paced(tenant.id, hook.id, 'hd');
    const start = 34_000_000;
    const { deps, sent } = roomy(start);
    // A release chain that has sent everything it held (a step comes, which will end it).
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await startRelease(deps, webhook);
    const [drained] = sent.splice(0) as ReleaseMessage[];
    // Meanwhile deliveries take the endpoint's time again, over its whole rate: one waits for its share, 4.9 s on.
    await deps.paces.reserve(hook.id, 5_900, deps.now());
    expect(await handleDeliverMessage(deps, message(0))).toBe('throttled');
    const [booked] = sent.splice(0) as DeliveryMessage[];
    await deps.paces.reserve(hook.id, 200, deps.now());
    expect(await handleDeliverMessage(deps, message(1))).toBe('held');
    // Held behind a chain that waits for its share, after the one given before.
    const release = sent.find((m) => (m as ReleaseMessage).kind === 'release') as ReleaseMessage | undefined;
    expect(release?.notBefore).toBeGreaterThan(booked?.sendAt ?? Number.POSITIVE_INFINITY);
    // The drained chain's step sends nothing: the held one does not go before the one given its share before it.
    const posts = () => receiver.received.filter((r) => r.path === '/held-quick-drained' && r.json.events[0]?.type !== 'webhook.ping');
    await handleDeliverMessage(deps, drained as ReleaseMessage);
    expect(posts()).toHaveLength(0);
    const { deps: due } = roomy(start + ((booked?.sendAt ?? 0) - deps.now()));
    expect(await handleDeliverMessage(due, booked as DeliveryMessage)).toBe('delivered');
    const { deps: time } = roomy(start + ((release?.notBefore ?? 0) - deps.now()) + 10);
    expect(await handleDeliverMessage(time, release as ReleaseMessage)).toBe('released');
    expect(posts().map((r) => r.json.events.map((e) => e.data))).toEqual([[0], [1]]);
  });

  it("holds a slow endpoint's deliveries whose shares would be over 15 minutes ahead, and releases them in order, packed, once the shares given before them are used", async () => {
    // Answers of 3 s, and its time taken for the next 15 minutes (a second more); a delivery given its share 10 minutes on before.
    const { tenant, hook, message, deps, sent, delays } = await slowBacklog('held-slow', 'hs', 3_000, 36_000_000);
    const booked: DeliveryMessage = { ...message(0), sendAt: deps.now() + 600_000, paceMs: 300 };

    const tat = async () => {
      const { deps: fresh } = roomy(36_000_000);
      return fresh.paces.freeAt(hook.id, fresh.now());
    };
    const tatBefore = await tat();

    // New deliveries are held in DynamoDB, not sent round the deliver queue for shares past
    // 15 minutes; they take none of its time (the next deliveries would wait behind that for nothing).
    for (const i of [1, 2, 3]) expect(await handleDeliverMessage(deps, message(i))).toBe('held');
    expect(await tat()).toBe(tatBefore);
    const health = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health;
    expect(await health()).toMatchObject({ state: 'healthy', held: 3 });
    // One release chain, whose first step waits for the first held delivery's share, after
    // every share given before it: it looks again at half that wait, as a waiting delivery does.
    expect(sent).toHaveLength(1);
    const [release] = sent as ReleaseMessage[];
    expect(release).toMatchObject({ kind: 'release', webhookId: hook.id });
    expect((release?.notBefore ?? 0) - deps.now()).toBeGreaterThan(900_000);
    expect(delays[0]).toBeOneOf([450, 451]);

    // Its look, 7.5 minutes on: the shares before it are not all used, so it sends nothing and looks again.
    const { deps: look, sent: looked, delays: lookDelays } = roomy(36_000_000 + 451_000);
    expect(await handleDeliverMessage(look, release as ReleaseMessage)).toBe('released');
    // The same step again, following this look (noted as a step already ended, see `releaseLookAt`).
    expect(looked).toEqual([{ ...release, after: (await deps.webhooks.get(tenant.id, hook.id))?.releaseAt }]);
    expect(lookDelays[0]).toBeOneOf([225, 226]);
    expect(okEvents('/held-slow')).toEqual([]);

    // The delivery given its share before goes at it, though deliveries are held behind it.
    const { deps: due } = roomy(36_000_000 + 600_000);
    expect(await handleDeliverMessage(due, booked)).toBe('delivered');

    // At the held delivery's share, the chain sends what is held: in order, in one POST.
    const { deps: time, sent: stepped } = roomy(36_000_000 + 901_000);
    expect(await handleDeliverMessage(time, release as ReleaseMessage)).toBe('released');
    expect(okEvents('/held-slow').map((e) => e.data)).toEqual([0, 1, 2, 3]);
    // Two POSTs besides the ping: the delivery given its share before, and the three held together.
    const posts = receiver.received.filter((r) => r.path === '/held-slow' && r.json.events[0]?.type !== 'webhook.ping');
    expect(posts.map((r) => r.json.events.length)).toEqual([1, 3]);
    expect(await health()).toMatchObject({ held: 0 });
    // Its next step finds nothing held and ends the chain: new deliveries take shares again.
    const { deps: after } = roomy(36_000_000 + 902_000);
    expect(await handleDeliverMessage(after, stepped[0] as ReleaseMessage)).toBe('released');
    expect((await deps.webhooks.get(tenant.id, hook.id))?.releaseToken).toBeUndefined();
    expect(await handleDeliverMessage(after, message(4))).toBe('delivered');
  });

  it("releases a slow endpoint's held backlog as soon as it answers quickly again, not at its chain's next look, minutes on", async () => {
    // Answers of 1.5 s (one quick answer halves that under a second), and its time taken
    // for the next 15 minutes: new deliveries are held, and a chain waits for that time.
    const start = 54_000_000;
    const { tenant, hook, message, deps, sent } = await slowBacklog('held-back', 'hb', 1_500, start);
    for (const i of [1, 2]) expect(await handleDeliverMessage(deps, message(i))).toBe('held');
    const [waiting] = sent as ReleaseMessage[];
    expect((waiting?.notBefore ?? 0) - deps.now()).toBeGreaterThan(900_000);

    // A minute on, a delivery given its share before goes, and is answered quickly: the
    // endpoint's time is given back, and a new chain starts, to send what is held now.
    receiver.answer('/held-back', 200);
    const { deps: due, sent: started } = roomy(start + 60_000);
    expect(await handleDeliverMessage(due, { ...message(0), sendAt: due.now(), paceMs: 150 })).toBe('delivered');
    expect((await deps.webhooks.get(tenant.id, hook.id))?.slowMs).toBeUndefined();
    const chains = started as ReleaseMessage[];
    expect(chains).toEqual([expect.objectContaining({ kind: 'release', webhookId: hook.id })]);
    expect(chains[0]?.notBefore).toBeUndefined();
    expect((await deps.webhooks.get(tenant.id, hook.id))?.releaseToken).toBe(chains[0]?.token);
    const { deps: step } = roomy(start + 61_000);
    expect(await handleDeliverMessage(step, chains[0] as ReleaseMessage)).toBe('released');
    expect(okEvents('/held-back').map((e) => e.data)).toEqual([0, 1, 2]);
    // The waiting chain's next look finds another chain's token, and ends.
    expect(await handleDeliverMessage(step, waiting as ReleaseMessage)).toBe('stale');
  });

  it("releases a slow endpoint's held backlog at once when it answers quickly just after its chain's look, which sent nothing", async () => {
    const tenant = await createTenant(sandbox, 'held-look');
    const url = `${receiver.url}/held-look`;
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'hl:0', url });
    const message = paced(tenant.id, hook.id, 'hl');
    const start = 61_200_000;
    const { deps, sent } = roomy(start);
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, url, 1_500);
    await deps.paces.reserve(hook.id, 1_801_000, deps.now());
    expect(await handleDeliverMessage(deps, message(1))).toBe('held');
    const [waiting] = sent as ReleaseMessage[];
    // Its look, 15 minutes on: the time is not given back, it looks again (and notes the step).
    const { deps: look, sent: looked } = roomy(start + 900_000);
    expect(await handleDeliverMessage(look, waiting as ReleaseMessage)).toBe('released');
    expect(looked).toHaveLength(1);
    expect(await handleDeliverMessage(look, message(2))).toBe('held');

    // Two seconds after that look (within a step's longest time, 11 s here), a delivery
    // given its share before is answered quickly: a new chain sends what is held now, not
    // the waiting chain's next look, 7.5 minutes on, with everything meanwhile held.
    receiver.answer('/held-look', 200);
    const { deps: due, sent: started } = roomy(start + 902_000);
    expect(await handleDeliverMessage(due, { ...message(0), sendAt: due.now(), paceMs: 150 })).toBe('delivered');
    const chains = (started as ReleaseMessage[]).filter((m) => m.kind === 'release');
    expect(chains).toHaveLength(1);
    expect(chains[0]?.notBefore).toBeUndefined();
    const { deps: step } = roomy(start + 903_000);
    expect(await handleDeliverMessage(step, chains[0] as ReleaseMessage)).toBe('released');
    expect(okEvents('/held-look').map((e) => e.data)).toEqual([0, 1, 2]);
  });

  it("releases a slow endpoint's held backlog at once when it answers quickly just after the first hold started its chain", async () => {
    const start = 64_800_000;
    const { message, deps } = await slowBacklog('held-soon', 'hn', 1_500, start);
    expect(await handleDeliverMessage(deps, message(1))).toBe('held');

    // A second on, a delivery given its share before is answered quickly: the chain that
    // began a second ago sends nothing until its look, so a new one starts and sends it.
    receiver.answer('/held-soon', 200);
    const { deps: due, sent: started } = roomy(start + 1_000);
    expect(await handleDeliverMessage(due, { ...message(0), sendAt: due.now(), paceMs: 150 })).toBe('delivered');
    const chains = (started as ReleaseMessage[]).filter((m) => m.kind === 'release');
    expect(chains).toHaveLength(1);
    const { deps: step } = roomy(start + 2_000);
    expect(await handleDeliverMessage(step, chains[0] as ReleaseMessage)).toBe('released');
    expect(okEvents('/held-soon').map((e) => e.data)).toEqual([0, 1]);
  });

  it("starts no new chain for the quick answer to a release step's own POST, which gives the time back: the new chain would send that step's page again", async () => {
    const start = 68_400_000;
    const { tenant, hook, message, deps, sent } = await slowBacklog('held-own', 'ho', 1_500, start);
    for (const i of [1, 2]) expect(await handleDeliverMessage(deps, message(i))).toBe('held');
    const [waiting] = sent as ReleaseMessage[];

    // Its time come, the chain sends what is held; the quick answer to that POST gives the
    // endpoint's time back while the step is still sending, and the chain goes on alone.
    receiver.answer('/held-own', 200);
    const { deps: time, sent: stepped } = roomy(start + 902_000);
    expect(await handleDeliverMessage(time, waiting as ReleaseMessage)).toBe('released');
    expect((await deps.webhooks.get(tenant.id, hook.id))?.slowMs).toBeUndefined();
    expect(okEvents('/held-own').map((e) => e.data)).toEqual([1, 2]);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.releaseToken).toBe(waiting?.token);
    expect((stepped as ReleaseMessage[]).map((m) => m.token)).toEqual([waiting?.token]);
  });

  it("releases a slow endpoint's held backlog when it recovers from a quarantine entered while the backlog's chain waited, and that chain ends", async () => {
    const start = 57_600_000;
    const { tenant, hook, message, deps, sent } = await slowBacklog('held-quar', 'hk', 3_000, start);
    for (const i of [1, 2]) expect(await handleDeliverMessage(deps, message(i))).toBe('held');
    const [waiting] = sent.splice(0) as ReleaseMessage[];

    // Quarantined (a single failure does here) a minute on, and its probe succeeds a minute after.
    const webhook = async () => (await deps.webhooks.get(tenant.id, hook.id)) as NonNullable<Awaited<ReturnType<typeof deps.webhooks.get>>>;
    const { deps: failed } = roomy(start + 60_000);
    await applyHealth(failed, await webhook(), { type: 'failure', now: failed.now(), statusCode: 500, error: 'HTTP 500' });
    expect(await handleDeliverMessage(failed, message(3))).toBe('held');
    const { deps: probed, sent: recovered } = roomy(start + 120_000);
    await applyHealth(probed, await webhook(), { type: 'probe_succeeded', now: probed.now() });
    const [release] = recovered as ReleaseMessage[];
    expect(release?.notBefore).toBeUndefined();

    // Its release sends what is held at once, in order, the backlog's and the quarantine's together.
    receiver.answer('/held-quar', 200);
    expect(await handleDeliverMessage(probed, release as ReleaseMessage)).toBe('released');
    expect(okEvents('/held-quar').map((e) => e.data)).toEqual([1, 2, 3]);
    // The chain that waited for the backlog's time looks again, and ends.
    const { deps: look, sent: again } = roomy(start + 451_000);
    expect(await handleDeliverMessage(look, waiting as ReleaseMessage)).toBe('stale');
    expect(again).toEqual([]);
  });

  it("holds a quick endpoint's delivery given its share before, behind what a quarantine held: only a backlog's chain waits for those shares", async () => {
    const tenant = await createTenant(sandbox, 'held-quick');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'hq:0', url: `${receiver.url}/held-quick` });
    const message = paced(tenant.id, hook.id, 'hq');
    const { deps } = roomy(50_400_000);
    // Something held (for a quarantine it recovered from, say): its release sends at once, in order, with this one among them.
    expect(await holdDelivery(deps, message(2), 100)).toEqual([true, true]);
    const booked: DeliveryMessage = { ...message(1), sendAt: deps.now(), paceMs: 20 };
    expect(await handleDeliverMessage(deps, booked)).toBe('held');
    expect(okEvents('/held-quick')).toEqual([]);
  });

  it("holds a slow endpoint's delivery given its share before, behind what a pause or a quarantine held: only its backlog's chain waits for those shares", async () => {
    const tenant = await createTenant(sandbox, 'held-slow-paused');
    const url = `${receiver.url}/held-slow-paused`;
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'hp:0', url });
    const message = paced(tenant.id, hook.id, 'hp');
    const { deps } = roomy(50_400_000);
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, url, 1_500);
    // Held under a pause, its share come due then (its release, on the lift, sends at once):
    // one given its share after it, come due once the pause is lifted, waits behind it.
    expect(await holdDelivery(deps, { ...message(1), sendAt: deps.now() - 60_000, paceMs: 150 }, 100)).toEqual([true, true]);
    await startRelease(deps, (await deps.webhooks.get(tenant.id, hook.id)) as NonNullable<Awaited<ReturnType<typeof deps.webhooks.get>>>);
    const booked: DeliveryMessage = { ...message(2), sendAt: deps.now(), paceMs: 150 };
    expect(await handleDeliverMessage(deps, booked)).toBe('held');
    expect(okEvents('/held-slow-paused')).toEqual([]);
  });

  it("starts one release chain for a slow endpoint's deliveries held together, and takes it for alive while it waits hours for their time", async () => {
    const tenant = await createTenant(sandbox, 'held-wait');
    const url = `${receiver.url}/held-wait`;
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'hw:0', url });
    const revived = () => sandbox.metrics.total('ChainsRevived');
    const before = revived();
    // Answers of 3 s, and its time taken two hours ahead (a backlog booked at its whole rate before it turned slow).
    const start = 46_800_000;
    const { deps, sent } = roomy(start);
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, url, 3_000);
    await deps.paces.reserve(hook.id, 7_200_000, deps.now());
    /** A delivery whose event was accepted `offsetMs` on, as the deliver queue brings it then. */
    const message = (i: number, offsetMs: number): DeliveryMessage => ({
      ...paced(tenant.id, hook.id, 'hw')(i),
      events: [
        deliveredEventFixture({
          id: `evt_hw${i}`,
          seq: i + 1,
          resource: 'hw:1',
          data: i,
          created_at: new Date(Date.now() + start + offsetMs).toISOString(),
        }),
      ],
    });

    // Three at once, each finding nothing held: one chain (its start is conditional on the
    // health read; the others read the webhook again and find its token).
    expect(await Promise.all([1, 2, 3].map((i) => handleDeliverMessage(deps, message(i, 0))))).toEqual(['held', 'held', 'held']);
    const chains = sent as ReleaseMessage[];
    expect(chains).toHaveLength(1);
    const token = (await deps.webhooks.get(tenant.id, hook.id))?.releaseToken;
    expect(chains[0]?.token).toBe(token);

    // It looks every 15 minutes (SQS's longest delay), each look a step of a live chain.
    let step = chains[0] as ReleaseMessage;
    for (const look of [1, 2, 3]) {
      const { deps: at, sent: again } = roomy(start + look * 901_000);
      expect(await handleDeliverMessage(at, step)).toBe('released');
      expect(again).toHaveLength(1);
      step = again[0] as ReleaseMessage;
    }
    // 45 minutes on, past CHAIN_LOST_AFTER_MS, a new delivery held behind it does not take it for lost.
    const { deps: later45, sent: none } = roomy(start + 2_710_000);
    expect(await handleDeliverMessage(later45, message(4, 2_710_000))).toBe('held');
    expect(none).toEqual([]);
    expect(revived() - before).toBe(0);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.releaseToken).toBe(token);
    expect(okEvents('/held-wait')).toEqual([]);
  });

  it("counts a slow endpoint's deliveries past the held cap for a gap marker, sent after what was held, where nothing bounded its backlog", async () => {
    const tenant = await createTenant(sandbox, 'held-slow-cap');
    const url = `${receiver.url}/held-slow-cap`;
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'hc:0', url });
    const message = paced(tenant.id, hook.id, 'hc');
    const overflow = () => sandbox.metrics.total('EventsHeldOverflow');
    const before = overflow();
    // The cap is 2 here; answers of 9 s, and its time taken for the next 20 minutes.
    const warned: Array<[string, Record<string, unknown>]> = [];
    const logger = {
      info: () => {},
      warn: (line: string, fields?: Record<string, unknown>) => void warned.push([line, fields ?? {}]),
      error: () => {},
    };
    const { deps: quiet, sent } = at(39_600_000);
    const deps = { ...quiet, logger };
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, url, 9_000);
    await deps.paces.reserve(hook.id, 1_200_000, deps.now());
    for (const i of [1, 2, 3, 4]) expect(await handleDeliverMessage(deps, message(i))).toBe('held');
    expect(overflow() - before).toBe(2);
    // Its overflow's line tells on-call it is a slow endpoint's backlog, not a quarantine's (see the runbook).
    const past = warned.filter(([line]) => line.startsWith('Deliveries past the held cap')).map(([, fields]) => fields);
    expect(past).toEqual([expect.objectContaining({ webhook: hook.id, state: 'healthy', answerMs: 9_000 })]);
    const [release] = sent as ReleaseMessage[];

    // Quick again: its time given back, the chain goes at its next look, a minute on (its
    // first look comes at half its wait, but a look that finds the time given back goes).
    const { deps: look, sent: stepped } = at(39_600_000 + 601_000);
    await look.paces.giveBack(hook.id);
    expect(await handleDeliverMessage(look, release as ReleaseMessage)).toBe('released');
    expect(okEvents('/held-slow-cap').map((e) => e.data)).toEqual([1, 2]);
    // Then the marker for the two past the cap.
    const { deps: next, sent: marked } = at(39_600_000 + 602_000);
    expect(await handleDeliverMessage(next, stepped[0] as ReleaseMessage)).toBe('released');
    const marker = (marked as DeliveryMessage[]).find((m) => m.events?.[0]?.type === 'sluice.gap');
    expect(marker?.events[0]).toMatchObject({ resource: 'hc:1', data: { dropped: 2, reason: 'held_overflow' } });
  });

  it('gives a backlog paced during a slow moment (a cold start) its rate back within a minute of quick answers', async () => {
    const tenant = await createTenant(sandbox, 'cold-start');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'cs:0', url: `${receiver.url}/cold-start` });
    const message = paced(tenant.id, hook.id, 'cs');
    // The first POST took 3 s to answer, and the deliveries that came meanwhile took
    // shares 300 ms apart, the last of them 2 minutes ahead.
    const { deps, sent, delays } = at(14_400_000);
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, `${receiver.url}/cold-start`, 3_000);
    await deps.paces.reserve(hook.id, 120_000, deps.now());
    expect(await Promise.all([1, 2].map((i) => handleDeliverMessage(deps, message(i))))).toEqual(['throttled', 'throttled']);
    const waiting = sent.splice(0) as DeliveryMessage[];
    expect(delays).toEqual([60, 60]);

    // Quick answers since: slow no more (3 s halved twice is under a second).
    for (const i of [10, 11]) expect(await handleDeliverMessage(deps, { ...message(i), sendAt: deps.now() })).toBe('delivered');
    expect((await deps.webhooks.get(tenant.id, hook.id))?.slowMs).toBeUndefined();

    // A minute on they look, and go: not at their shares, a minute later still.
    const { deps: next } = at(14_400_000 + 61_000);
    expect(await Promise.all(waiting.map((m) => handleDeliverMessage(next, m)))).toEqual(['delivered', 'delivered']);
    expect(new Set(okEvents('/cold-start').map((e) => e.data))).toEqual(new Set([1, 2, 10, 11]));
  });

  it('starts a new URL afresh: its deliveries do not wait behind the shares the old URL was paced to', async () => {
    const tenant = await createTenant(sandbox, 'slow-moved');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'sm:0', url: `${receiver.url}/slow-old` });
    const message = paced(tenant.id, hook.id, 'sm');
    const { deps, sent } = at(10_800_000);
    await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, `${receiver.url}/slow-old`, 1_500);
    await deps.paces.reserve(hook.id, 840_000, deps.now());
    expect(await Promise.all([1, 2].map((i) => handleDeliverMessage(deps, message(i))))).toEqual(['throttled', 'throttled']);
    const waiting = sent.splice(0) as DeliveryMessage[];

    const patched = await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { url: `${receiver.url}/slow-new` } });
    expect(patched.status).toBe(200);

    // A new delivery goes at once; the old URL's backlog at its next look.
    expect(await handleDeliverMessage(deps, message(3))).toBe('delivered');
    const { deps: next } = at(10_800_000 + 900_000);
    expect(await Promise.all(waiting.map((m) => handleDeliverMessage(next, m)))).toEqual(['delivered', 'delivered']);
    expect(new Set(okEvents('/slow-new').map((e) => e.data))).toEqual(new Set([1, 2, 3]));
  });

  it('starts a new URL afresh when the old one turned slow while the new one answered its verification ping', async () => {
    const tenant = await createTenant(sandbox, 'slowed-moving');
    const oldUrl = `${receiver.url}/slowed-moving`;
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'smv:0', url: oldUrl });
    const message = paced(tenant.id, hook.id, 'smv');
    const { deps } = at(11_700_000);
    // While the new URL answers its ping, the old one turns slow (9 s answers) and its
    // backlog takes ten minutes of its time at the slow pace.
    receiver.answer('/slowed-moving-new', async ({ ping }) => {
      if (ping) {
        await deps.webhooks.noteSlowAnswers(tenant.id, hook.id, oldUrl, 9_000);
        await deps.paces.reserve(hook.id, 600_000, deps.now());
      }
      return 200;
    });
    const patched = await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, {
      key: tenant.key,
      body: { url: `${receiver.url}/slowed-moving-new` },
    });
    expect(patched.status).toBe(200);

    // The new URL does not wait behind the old one's slow backlog: a new delivery goes at once.
    expect(await handleDeliverMessage(deps, message(1))).toBe('delivered');
  });

  it('takes the slow pace once a POST has gone a second unanswered, not once it times out, so an endpoint that starts to hang holds few workers', async () => {
    const tenant = await createTenant(sandbox, 'hangs');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'hg:0', url: `${receiver.url}/hangs` });
    receiver.answer('/hangs', async () => {
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      return 200;
    });
    const message = paced(tenant.id, hook.id, 'hg');
    const { deps, sent } = at(14_400_000);
    const first = handleDeliverMessage(deps, message(0));
    await new Promise((resolve) => setTimeout(resolve, 1_300));

    // Unanswered for a second: the endpoint is at least that slow already.
    expect((await deps.webhooks.get(tenant.id, hook.id))?.slowMs).toBe(1_000);
    // Deliveries now take shares at the slow pace (100 ms each, ten under way at once),
    // not at 50 a second, which would send all 15 now to hang too.
    const outcomes = await Promise.all(Array.from({ length: 15 }, (_, i) => handleDeliverMessage(deps, message(i + 1))));
    expect(outcomes.filter((o) => o === 'delivered')).toHaveLength(10);
    const times = (sent as DeliveryMessage[]).map((m) => m.sendAt ?? Number.NaN).sort((a, b) => a - b);
    expect(times).toHaveLength(5);
    for (const [i, t] of times.slice(1).entries()) expect(t - (times[i] as number)).toBeCloseTo(100, 0);

    // Its answer, at 2.5 s, is kept in turn.
    expect(await first).toBe('delivered');
    const slowMs = (await deps.webhooks.get(tenant.id, hook.id))?.slowMs ?? 0;
    expect(slowMs).toBeGreaterThanOrEqual(2_500);
    expect(slowMs).toBeLessThan(3_000);
  }, 30_000);

  it("leaves a new URL's pace alone when the old URL answers slowly after the change", async () => {
    const tenant = await createTenant(sandbox, 'slow-behind');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'sb:0', url: `${receiver.url}/slow-behind` });
    receiver.answer('/slow-behind', async () => {
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      return 200;
    });
    const { deps } = at(18_000_000);
    const sending = handleDeliverMessage(deps, paced(tenant.id, hook.id, 'sb')(0));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const patched = await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, {
      key: tenant.key,
      body: { url: `${receiver.url}/quick-new` },
    });
    expect(patched.status).toBe(200);

    // Neither the old URL's second unanswered nor its 1.5 s answer is the new URL's.
    expect(await sending).toBe('delivered');
    expect((await deps.webhooks.get(tenant.id, hook.id))?.slowMs).toBeUndefined();
  }, 30_000);
  /** A sender whose answers (each `durationMs` long, as the sender reports) come when the test lets them. */
  const gatedSend = (answer: Partial<SendResult> = {}) => {
    const gates: Array<() => void> = [];
    const send = async () => {
      await new Promise<void>((resolve) => gates.push(resolve));
      return { statusCode: 200, durationMs: 40, error: undefined, retryAfter: undefined, responseSnippet: '', ...answer };
    };
    /** Lets the `n`th POST sent (from 0) have its answer, once it was sent. */
    const answer_ = async (n: number) => {
      while (gates[n] === undefined) await new Promise((resolve) => setTimeout(resolve, 10));
      gates[n]?.();
    };
    return { send, answer: answer_ };
  };

  it("keeps a new URL's pace when the old URL answers quickly after the change: the old URL's quick answer gives none of the new one's time back", async () => {
    const tenant = await createTenant(sandbox, 'quick-behind');
    const oldUrl = `${receiver.url}/quick-behind`;
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'qb:0', url: oldUrl });
    const { deps: base } = at(20_000_000);
    await base.webhooks.noteSlowAnswers(tenant.id, hook.id, oldUrl, 1_500);
    const gated = gatedSend();
    const deps = { ...base, send: gated.send } as typeof base;
    const message = paced(tenant.id, hook.id, 'qb');
    const sending = handleDeliverMessage(deps, message(0));

    // While that POST to the old URL is under way, the owner moves the webhook; the new
    // URL answers in 5 s, and its backlog has taken a minute of its time at that pace.
    const newUrl = `${receiver.url}/quick-behind-new`;
    const moved = await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { url: newUrl } });
    expect(moved.status).toBe(200);
    await base.webhooks.noteSlowAnswers(tenant.id, hook.id, newUrl, 5_000);
    await base.paces.reserve(hook.id, 60_000, base.now());

    // The old URL answers quickly: that says nothing of the new one, slow as it was.
    await gated.answer(0);
    expect(await sending).toBe('delivered');
    expect((await base.webhooks.get(tenant.id, hook.id))?.slowMs).toBe(5_000);
    // A new delivery waits behind the new URL's backlog, not at once beside it.
    expect(await handleDeliverMessage(base, message(1))).toBe('throttled');
  });

  it('gives its time back once when quick answers end its slowness together: not again after deliveries took the whole rate', async () => {
    const tenant = await createTenant(sandbox, 'quick-together');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'qt:0', url: `${receiver.url}/quick-together` });
    const { deps: base } = at(21_000_000);
    await base.webhooks.noteSlowAnswers(tenant.id, hook.id, `${receiver.url}/quick-together`, 1_500);
    const gated = gatedSend();
    const deps = { ...base, send: gated.send } as typeof base;
    const message = paced(tenant.id, hook.id, 'qt');
    // Two POSTs under way together, each sent while the endpoint was slow.
    const [first, second] = [handleDeliverMessage(deps, message(0)), handleDeliverMessage(deps, message(1))];
    await gated.answer(0);
    expect(await first).toBe('delivered');
    expect((await base.webhooks.get(tenant.id, hook.id))?.slowMs).toBeUndefined();

    // Its whole rate is back, and deliveries have taken four seconds of its time at it since.
    await base.paces.reserve(hook.id, 4_000, base.now());
    // The second quick answer was sent while the endpoint was slow too: its time is not given back again.
    await gated.answer(1);
    expect(await second).toBe('delivered');
    expect(await handleDeliverMessage(base, message(2))).toBe('throttled');
  });

  it.each([
    ['a 503 asking it to wait', { statusCode: 503, retryAfter: '5' }],
    ['a 429 asking it to wait', { statusCode: 429, retryAfter: '5' }],
    ['a 500', { statusCode: 500 }],
    ['a connection refused', { statusCode: undefined, error: 'connection refused' }],
  ])('keeps its slowness through a quick answer that takes no delivery (%s): it says nothing of how long a delivery takes', async (_, answer) => {
    const name = `quick-${answer.statusCode ?? 'refused'}`;
    const tenant = await createTenant(sandbox, name);
    const hook = await createWebhook(sandbox, tenant.key, { resource: `${name}:0`, url: `${receiver.url}/${name}` });
    const { deps: base } = at(22_000_000);
    await base.webhooks.noteSlowAnswers(tenant.id, hook.id, `${receiver.url}/${name}`, 1_500);
    await base.paces.reserve(hook.id, 60_000, base.now());
    const gated = gatedSend({ durationMs: 30, ...answer });
    const deps = { ...base, send: gated.send } as typeof base;

    // A delivery whose time has come gets the quick answer.
    const sending = handleDeliverMessage(deps, { ...paced(tenant.id, hook.id, name)(0), sendAt: base.now() });
    await gated.answer(0);
    await sending;

    // Still slow, and its backlog keeps its times: none of it goes at the whole rate.
    expect((await base.webhooks.get(tenant.id, hook.id))?.slowMs).toBe(1_500);
    expect(await base.paces.givenBack(hook.id, base.now() + 30_000, base.now())).toBe(false);
  });

  it.each([
    ['a 410', 410, undefined],
    ['a 503 asking to wait an hour', 503, '3600'],
    ['a 500 (a single failure quarantines here)', 500, undefined],
  ])(
    "leaves a new URL's health alone when the old URL answers %s after the change",
    async (_, status, retryAfter) => {
      const name = `old-${status}`;
      const tenant = await createTenant(sandbox, name);
      const hook = await createWebhook(sandbox, tenant.key, { resource: `${name}:0`, url: `${receiver.url}/${name}` });
      const { deps: base } = at(19_000_000);
      // The POST under way to the old URL gets its answer only after the owner moved the webhook.
      const deps = {
        ...base,
        send: async () => {
          await new Promise((resolve) => setTimeout(resolve, 1_500));
          return { statusCode: status, durationMs: 1_500, error: undefined, retryAfter, responseSnippet: '' };
        },
      } as typeof base;
      const sending = handleDeliverMessage(deps, paced(tenant.id, hook.id, name)(0));
      await new Promise((resolve) => setTimeout(resolve, 300));
      const moved = await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, {
        key: tenant.key,
        body: { url: `${receiver.url}/${name}-new` },
      });
      expect(moved.status).toBe(200);
      await sending;
      const webhook = await deps.webhooks.get(tenant.id, hook.id);
      expect(webhook).toMatchObject({
        status: 'active',
        url: `${receiver.url}/${name}-new`,
        health: { state: 'healthy', consecutiveFailures: 0 },
      });
      expect(webhook?.notBefore).toBeUndefined();
      expect(webhook?.noticePending).toBeFalsy();
    },
    30_000,
  );
});
