/**
 * The hot-object incident as on-call sees it: the alarm that pages
 * (events-rejected-or-dropped) counts refusals by reason only, so the log names the
 * refused object, and does so a few times, not once per request of the flood.
 */
import { describe, expect, it } from 'vitest';
import { publish } from '../../functions/app/ingest.ts';
import { apiServices } from '../../functions/app/runtime.ts';
import type { LoggerPort } from '../../functions/core/telemetry.ts';
import { validatePublish } from '../../functions/core/validation.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant } from '../support/api.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
withSandbox({}, (s) => {
  sandbox = s;
});

describe('refusals in the log', () => {
  it('names an object refused for its rate once a minute, with how many of its events were refused since', async () => {
    // Prepare: ingest as the API runs it, with a log that keeps its lines and a clock of the test's.
    const lines: Array<{ message: string; fields: Record<string, unknown> }> = [];
    const note = (message: string, fields?: Readonly<Record<string, unknown>>) => void lines.push({ message, fields: { ...fields } });
    const logger: LoggerPort = { info: note, warn: note, error: note };
    let clock = Date.now();
    const { ingest } = apiServices({ ...sandbox.wiring, logger, now: () => clock }, {} as never, sandbox.notifier);
    const tenant = await createTenant(sandbox, 'hammer');
    const flood = async (requests: number) => {
      let refused = 0;
      for (let i = 0; i < requests; i++) {
        const events = validatePublish({
          events: Array.from({ length: 50 }, (_, k) => ({ resource: 'doc:hot', type: 'doc.edited', data: k })),
        });
        const outcome = await publish(ingest, tenant.id, events);
        refused += outcome.results.filter((r) => r.status === 'rejected').length;
      }
      return refused;
    };
    const refusalLines = () => lines.filter((l) => l.message.startsWith("Events refused for their object's"));

    // Act: a flood of 40 requests within a second (its burst is 200 events: 4 requests).
    const refusedFirst = await flood(40);

    // Assert: one line, naming the object.
    expect(refusedFirst).toBeGreaterThan(1_000);
    expect(refusalLines()).toHaveLength(1);
    const first = refusalLines()[0]?.fields ?? {};
    expect(first).toMatchObject({ tenant: tenant.id, resource: 'doc:hot', queue_full: 0 });

    // Act: a minute later, the flood goes on.
    clock += 61_000;
    const refusedLater = await flood(10);

    // Assert: a second line, counting every refusal since the first.
    expect(refusalLines()).toHaveLength(2);
    const second = refusalLines()[1]?.fields ?? {};
    expect(second).toMatchObject({ tenant: tenant.id, resource: 'doc:hot' });
    // The first line came with the first refused request (50 events); the second counts the
    // rest of the first flood and the later flood's first refused request (its first 200
    // events, a minute's tokens, were accepted).
    expect(first.rate_limited).toBe(50);
    expect(refusedLater).toBe(300);
    expect(second.rate_limited).toBe(refusedFirst - 50 + 50);
  });

  it('names the object whose events are refused for an idempotency key used for another event, once a minute', async () => {
    // Prepare: a producer whose bug reuses one key for every change of its object (the key
    // is the resource id): EventsRejected counts them by reason only, and each request,
    // answered 202, is like any other in the API's access log.
    const lines: Array<{ message: string; fields: Record<string, unknown> }> = [];
    const note = (message: string, fields?: Readonly<Record<string, unknown>>) => void lines.push({ message, fields: { ...fields } });
    const logger: LoggerPort = { info: note, warn: note, error: note };
    let clock = Date.now();
    const { ingest } = apiServices({ ...sandbox.wiring, logger, now: () => clock }, {} as never, sandbox.notifier);
    const tenant = await createTenant(sandbox, 'reuser');
    const change = (n: number) => validatePublish({ events: [{ resource: 'order:42', type: 'order.changed', data: n, id: 'order:42' }] });
    expect((await publish(ingest, tenant.id, change(0))).results[0]?.status).toBe('accepted');

    // Act: 20 more changes under the same key.
    const codes: string[] = [];
    for (let n = 1; n <= 20; n++) {
      const [result] = (await publish(ingest, tenant.id, change(n))).results;
      codes.push(result?.status === 'rejected' ? result.error.code : String(result?.status));
    }
    clock += 61_000;
    const [later] = (await publish(ingest, tenant.id, change(21))).results;

    // Assert: every one refused, and the log names the tenant and resource, once and again a minute later.
    expect(new Set(codes)).toEqual(new Set(['invalid_request']));
    expect(later).toMatchObject({ status: 'rejected', error: { code: 'invalid_request' } });
    const keyLines = lines.filter((l) => l.message.startsWith('Events refused for their idempotency key'));
    expect(keyLines.map((l) => l.fields)).toEqual([
      expect.objectContaining({ tenant: tenant.id, resource: 'order:42', invalid_request: 1, conflict: 0 }),
      expect.objectContaining({ tenant: tenant.id, resource: 'order:42', invalid_request: 20, conflict: 0 }),
    ]);
  });
});

describe('refusals for an idempotency key in the log', () => {
  it('name a tenant whose producer sends one id for the events of every object once a minute, not once per object', async () => {
    // Prepare: a producer whose bug sends the same id ("undefined") for every event, each
    // request a change of another object: all but the first are refused for the key.
    const lines: Array<{ message: string; fields: Record<string, unknown> }> = [];
    const note = (message: string, fields?: Readonly<Record<string, unknown>>) => void lines.push({ message, fields: { ...fields } });
    const logger: LoggerPort = { info: note, warn: note, error: note };
    let clock = Date.now();
    const { ingest } = apiServices({ ...sandbox.wiring, logger, now: () => clock }, {} as never, sandbox.notifier);
    const tenant = await createTenant(sandbox, 'one-id');
    const change = (n: number) =>
      validatePublish({ events: [{ resource: `order:${n}`, type: 'order.changed', data: n, id: 'undefined' }] });

    // Act: 100 changes of 100 objects within a minute, then one more a minute later.
    const codes = new Set<string>();
    for (let n = 0; n <= 100; n++) {
      const [result] = (await publish(ingest, tenant.id, change(n))).results;
      if (n > 0) codes.add(result?.status === 'rejected' ? result.error.code : String(result?.status));
    }
    clock += 61_000;
    await publish(ingest, tenant.id, change(101));

    // Assert: a line per object would be a line per request (100 a minute); the tenant is named once, and again a minute later.
    expect(codes).toEqual(new Set(['invalid_request']));
    const keyLines = lines.filter((l) => l.message.startsWith('Events refused for their idempotency key'));
    expect(keyLines.map((l) => l.fields)).toEqual([
      expect.objectContaining({ tenant: tenant.id, resource: 'order:1', invalid_request: 1, conflict: 0 }),
      expect.objectContaining({ tenant: tenant.id, resource: 'order:101', invalid_request: 100, conflict: 0 }),
    ]);
  });
});
