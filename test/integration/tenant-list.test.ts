/**
 * The admin's list of tenants names no tenant that is gone: not after a rename that
 * overlapped its deletion, and a DELETE of a tenant already gone removes a stray entry.
 */
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { TenantStore } from '../../functions/adapters/tenant-store.ts';
import { LocalUsagePlans } from '../../functions/adapters/usage-plans.ts';
import { updateTenant } from '../../functions/app/tenants.ts';
import { CONTROL_PK } from '../../functions/definitions/tables.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant } from '../support/api.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
withSandbox({ canary: false }, (s) => {
  sandbox = s;
});

async function listed(): Promise<Array<{ id: string; name: string }>> {
  const all: Array<{ id: string; name: string }> = [];
  let after: string | undefined;
  for (;;) {
    const query = `/v1/admin/tenants?limit=100${after ? `&after=${after}` : ''}`;
    const page = (await call(sandbox, 'GET', query, { key: sandbox.adminKey })).body;
    all.push(...page.data);
    if (!page.has_more) return all;
    after = all.at(-1)?.id;
  }
}

describe('the list of tenants', () => {
  it('does not list a tenant a rename wrote back after its deletion', async () => {
    const tenant = await createTenant(sandbox, 'ghost');
    // The rename's write of the list entry is held until the deletion has finished.
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const client = documentClient(sandbox.emulators.dynamo);
    client.middlewareStack.add(
      (next) => async (args) => {
        const input = args.input as { Key?: { pk?: string }; Item?: { pk?: string } };
        if ((input.Key ?? input.Item)?.pk === CONTROL_PK.tenants) await gate;
        return next(args);
      },
      { step: 'initialize', name: 'slowEntry' },
    );
    const deps = {
      tenants: new TenantStore({ client, tableName: sandbox.wiring.controlTable }),
      usagePlans: new LocalUsagePlans(),
      now: Date.now,
    };
    const renaming = updateTenant(deps, tenant.id, { name: 'ghost-renamed' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect((await call(sandbox, 'DELETE', `/v1/admin/tenants/${tenant.id}`, { key: sandbox.adminKey })).status).toBe(204);
    release();
    await renaming.catch(() => undefined);

    expect((await listed()).filter((t) => t.id === tenant.id)).toEqual([]);
  });

  it('removes a stray entry when a tenant already gone is deleted again', async () => {
    const tenant = await createTenant(sandbox, 'stray');
    expect((await call(sandbox, 'DELETE', `/v1/admin/tenants/${tenant.id}`, { key: sandbox.adminKey })).status).toBe(204);
    // As a failed creation's cleanup could leave it: listed, with no tenant behind it.
    await sandbox.wiring.dynamo.send(
      new PutCommand({
        TableName: sandbox.wiring.controlTable,
        Item: { pk: CONTROL_PK.tenants, sk: tenant.id, id: tenant.id, name: 'stray', created_at: new Date().toISOString() },
      }),
    );
    expect((await listed()).some((t) => t.id === tenant.id)).toBe(true);

    expect((await call(sandbox, 'DELETE', `/v1/admin/tenants/${tenant.id}`, { key: sandbox.adminKey })).status).toBe(404);
    expect((await listed()).some((t) => t.id === tenant.id)).toBe(false);
  });
});
