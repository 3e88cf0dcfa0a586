/**
 * What on-call reads when an endpoint is quarantined or disabled. The admin key cannot
 * read a tenant's webhooks (their health needs the tenant's own key), so the log line
 * itself says what the endpoint last answered.
 */
import { describe, expect, it } from 'vitest';
import { applyHealth } from '../../functions/app/delivery/health.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import type { LoggerPort } from '../../functions/core/telemetry.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;
withSandbox({}, (s, r) => {
  [sandbox, receiver] = [s, r];
});

describe('endpoint health in the log', () => {
  it('names what the endpoint last answered when it is quarantined, and when it is disabled', async () => {
    // Prepare: a webhook, and the delivery stage with a log that keeps its lines.
    const tenant = await createTenant(sandbox, 'failing');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'doc:1', url: `${receiver.url}/failing` });
    const lines: Array<{ message: string; fields: Record<string, unknown> }> = [];
    const note = (message: string, fields?: Readonly<Record<string, unknown>>) => void lines.push({ message, fields: { ...fields } });
    const logger: LoggerPort = { info: note, warn: note, error: note };
    const deps = { ...deliveryDeps(sandbox.wiring, sandbox.notifier), logger };
    const now = Date.now();

    // Act: five failed attempts (the quarantine threshold), then a 410 to a probe.
    for (let i = 0; i < 5; i++) {
      const webhook = await deps.webhooks.get(tenant.id, hook.id);
      if (!webhook) throw new Error('webhook gone');
      await applyHealth(deps, webhook, { type: 'failure', now: now + i, statusCode: 503, error: 'HTTP 503' });
    }
    const quarantined = await deps.webhooks.get(tenant.id, hook.id);
    if (!quarantined) throw new Error('webhook gone');
    await applyHealth(deps, quarantined, { type: 'gone', now: now + 10, statusCode: 410 });

    // Assert
    expect(lines.find((l) => l.message === 'Endpoint quarantined')?.fields).toMatchObject({
      tenant: tenant.id,
      webhook: hook.id,
      last_failure: { status_code: 503, error: 'HTTP 503' },
      consecutive_failures: 5,
    });
    expect(lines.find((l) => l.message === 'Webhook disabled')?.fields).toMatchObject({
      tenant: tenant.id,
      webhook: hook.id,
      reason: 'gone',
      last_failure: { status_code: 410 },
    });
  });
});
