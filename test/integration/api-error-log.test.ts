/**
 * What on-call reads when the API answers 500 (the ingest-5xx runbook): the log line
 * names the tenant whose request failed.
 */
import { describe, expect, it } from 'vitest';
import type { QueueStore } from '../../functions/adapters/queue-store.ts';
import { createApi } from '../../functions/api/app.ts';
import { apiServices } from '../../functions/app/runtime.ts';
import type { LoggerPort } from '../../functions/core/telemetry.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant } from '../support/api.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
withSandbox({}, (s) => {
  sandbox = s;
});

describe('API errors', () => {
  it('logs an unhandled error with the tenant whose request it failed', async () => {
    // Prepare: the API over the sandbox's stores, with DynamoDB refusing every reserve.
    const tenant = await createTenant(sandbox, 'unlucky');
    const lines: Array<{ message: string; fields: Record<string, unknown> }> = [];
    const note = (message: string, fields?: Readonly<Record<string, unknown>>) => void lines.push({ message, fields: { ...fields } });
    const logger: LoggerPort = { info: note, warn: note, error: note };
    const services = apiServices({ ...sandbox.wiring, logger }, {} as never, sandbox.notifier);
    const refusing = Object.assign(Object.create(services.ingest.queues) as QueueStore, {
      reserve: async () => {
        throw Object.assign(new Error('Internal server error'), { name: 'InternalServerError' });
      },
    });
    const app = createApi({ ...services, ingest: { ...services.ingest, queues: refusing } }, async () => ({
      kind: 'tenant',
      tenantId: tenant.id,
    }));

    // Act
    const response = await app.request('/v1/events', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ events: [{ resource: 'doc:1', type: 'doc.edited', data: {} }] }),
    });

    // Assert
    expect(response.status).toBe(500);
    const unhandled = lines.filter((l) => l.message === 'Unhandled error in API');
    expect(unhandled).toHaveLength(1);
    expect(unhandled[0]?.fields).toMatchObject({ tenant: tenant.id, method: 'POST', path: '/v1/events' });
  });
});
