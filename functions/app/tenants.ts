/** Tenants (SPEC §3 Admin): created by the admin, each with one API key shown once. */

import type { TenantStore } from '../adapters/tenant-store.ts';
import type { UsagePlans } from '../adapters/usage-plans.ts';
import { ApiError } from '../core/errors.ts';
import { newId } from '../core/ids.ts';
import { generateApiKey, hashKey } from '../core/keys.ts';
import type { Tenant } from '../core/model.ts';
import type { LoggerPort } from '../core/telemetry.ts';
import type { TenantChange, TenantInput } from '../core/validation.ts';
import type { WebhookService } from './webhooks.ts';

export interface TenantServiceDeps {
  readonly tenants: TenantStore;
  readonly usagePlans: UsagePlans;
  readonly now: () => number;
  readonly logger?: LoggerPort;
}

export async function createTenant(deps: TenantServiceDeps, input: TenantInput) {
  const now = deps.now();
  const apiKey = generateApiKey('tenant');
  const tenant: Tenant = {
    id: newId('ten', now),
    name: input.name,
    limits: input.limits,
    usageKey: generateApiKey('tenant').slice(3),
    createdAt: new Date(now).toISOString(),
  };
  // The throttle exists before the key can be used; if storing fails, it is removed again.
  const provisioning = await deps.usagePlans.provision(tenant);
  try {
    await deps.tenants.create(tenant, hashKey(apiKey), provisioning);
  } catch (error) {
    await deps.tenants.delete(tenant.id).catch(() => undefined);
    // The key item is written last: a write that applied but whose answer was lost left it.
    await deps.tenants.deleteKey(hashKey(apiKey), tenant.id).catch(() => undefined);
    await deps.usagePlans.remove(provisioning).catch(() => undefined);
    throw error;
  }
  return { id: tenant.id, name: tenant.name, limits: tenant.limits, api_key: apiKey, created_at: tenant.createdAt };
}

/** The admin's list of tenants, oldest first: `after` is the last id of the page before. */
export async function listTenants(deps: Pick<TenantServiceDeps, 'tenants'>, limit: number, after?: string) {
  const page = await deps.tenants.list(limit, after);
  return { data: page.tenants.map((t) => ({ id: t.id, name: t.name, created_at: t.createdAt })), has_more: page.hasMore };
}

/** What an admin may see of a tenant: never a key, nor its hash. */
function tenantView(tenant: Tenant) {
  return { id: tenant.id, name: tenant.name, limits: tenant.limits, created_at: tenant.createdAt };
}

export async function getTenant(deps: Pick<TenantServiceDeps, 'tenants'>, tenantId: string) {
  const tenant = await deps.tenants.get(tenantId);
  if (!tenant) throw new ApiError('not_found', 'No tenant has this id.');
  return tenantView(tenant);
}

/** How many times a change sets the tenant's usage plan while other changes keep landing. */
const MAX_THROTTLE_ROUNDS = 3;

const sameThrottle = (a: Tenant, b: Tenant) => a.limits.rate_per_second === b.limits.rate_per_second && a.limits.burst === b.limits.burst;

/**
 * Changes a tenant's name or limits. The tenant's item is written first, then its
 * throttle (API Gateway's usage plan) is set from it: when that fails the answer says
 * so, and the same request sent again sets it (a change is idempotent). A lower
 * `max_webhooks` keeps the webhooks there are and refuses new ones past it.
 */
export async function updateTenant(deps: TenantServiceDeps, tenantId: string, change: TenantChange) {
  const updated = await deps.tenants.update(tenantId, change);
  if (!updated) throw new ApiError('not_found', 'No tenant has this id.');
  const { provisioning } = updated;
  let { tenant } = updated;
  if (change.limits?.rate_per_second !== undefined || change.limits?.burst !== undefined) {
    let settled = false;
    try {
      // Two changes at once may set the plan in the other order than they wrote the item:
      // the item is read again after each setting, until the plan has what it says.
      for (let round = 0; round < MAX_THROTTLE_ROUNDS && !settled; round++) {
        await deps.usagePlans.setThrottle(provisioning, tenant);
        const now = await deps.tenants.get(tenantId);
        settled = !now || sameThrottle(now, tenant);
        if (!settled && now) tenant = now;
      }
    } catch (error) {
      deps.logger?.error("A tenant's new limits are stored but its usage plan was not changed", { tenant: tenantId, error });
      const throttled = error instanceof Error && error.name === 'TooManyRequestsException';
      throw throttled
        ? new ApiError('rate_limited', 'API Gateway is throttling changes to usage plans; send the same request again shortly.', 2)
        : new ApiError('internal', "The tenant's limits are stored but its API throttle is not changed yet; send the same request again.");
    }
    // Changes kept landing: the plan may have any of them. Said so, never answered as done.
    if (!settled) {
      throw new ApiError(
        'conflict',
        "Other changes of this tenant's limits kept landing while its API throttle was set; its limits are stored, send the same request again to set the throttle from them.",
      );
    }
  }
  return tenantView(tenant);
}

/** What deleting a tenant needs besides the tenants: its webhooks' service, and how long one request may work. */
export interface TenantDeletionDeps extends TenantServiceDeps {
  readonly webhooks: {
    list(tenantId: string, limit: number): Promise<{ readonly data: ReadonlyArray<{ readonly id: string }> }>;
    delete: WebhookService['delete'];
  };
  /** The kill switches, each lifted as DELETE /v1/admin/switches/{id} lifts it. */
  readonly switches: {
    list(options: { lifting: true }): Promise<ReadonlyArray<{ readonly id: string; readonly tenant: string }>>;
    lift(id: string): Promise<void>;
  };
  /** @default DELETION_BUDGET_MS */
  readonly deletionBudgetMs?: number;
}

/** A step of a deletion that finds its thing gone (done meanwhile by another request) has nothing left to do. */
function goneMeanwhile(error: unknown): void {
  if (!(error instanceof ApiError && error.code === 'not_found')) throw error;
}

/** How long one request deletes webhooks before it answers that the deletion goes on (API Gateway waits 29 s). */
const DELETION_BUDGET_MS = 15_000;
const DELETION_PAGE = 100;

/**
 * Deletes a tenant, in an order that shuts it out first: marked as being deleted (from
 * then on it is not found: not listed, changed, rotated or given a webhook), its key's
 * item gone (the authorizer refuses the key; API Gateway may keep an answer a minute),
 * its usage plan and API key gone (which API Gateway checks on every request, a cached
 * answer or not), then its webhooks with what they hold, and last its item. A tenant
 * with more webhooks than one request has time for answers `deleting`: the same
 * request sent again goes on. Then the switches naming it are lifted: its paused
 * objects are rung, and their queues drain to no webhook, where they would have stayed
 * scheduled (and listed to the admin) until their events expired. Its events, streams,
 * dead letters and attempts expire with the retention period.
 */
export async function deleteTenant(deps: TenantDeletionDeps, tenantId: string): Promise<'deleted' | 'deleting'> {
  const started = deps.now();
  const deletion = await deps.tenants.beginDeletion(tenantId, started);
  if (!deletion) throw new ApiError('not_found', 'No tenant has this id.');
  if (deletion.keyHash) await deps.tenants.deleteKey(deletion.keyHash, tenantId);
  await deps.usagePlans.remove(deletion.provisioning);
  for (;;) {
    const { data } = await deps.webhooks.list(tenantId, DELETION_PAGE);
    if (data.length === 0) break;
    for (const webhook of data) {
      // Deleted meanwhile by another request (the tenant's own, through a cached answer).
      await deps.webhooks.delete(tenantId, webhook.id).catch(goneMeanwhile);
      if (deps.now() - started >= (deps.deletionBudgetMs ?? DELETION_BUDGET_MS)) return 'deleting';
    }
  }
  for (const { id } of (await deps.switches.list({ lifting: true })).filter((s) => s.tenant === tenantId)) {
    // Lifted meanwhile by another request.
    await deps.switches.lift(id).catch(goneMeanwhile);
  }
  await deps.tenants.delete(tenantId);
  deps.logger?.info('Tenant deleted', { tenant: tenantId });
  return 'deleted';
}

/**
 * Replaces a tenant's API key (one that leaked): the tenant keeps everything else, its
 * usage plan too (the plan's key is not the tenant's secret, only its throttle's name).
 * The new key's item is written first, and works only once the tenant's item names its
 * hash; that one conditional write is the rotation. So a rotation that fails before it
 * leaves the old key working and no other, and one that fails after it has the new key
 * working and the old one refused: never no key, never two (beyond API Gateway's cache).
 */
export async function rotateTenantKey(deps: TenantServiceDeps, tenantId: string): Promise<{ id: string; api_key: string }> {
  const old = await deps.tenants.keyHashOf(tenantId);
  if (old === undefined) throw new ApiError('not_found', 'No tenant has this id.');
  const apiKey = generateApiKey('tenant');
  const hash = hashKey(apiKey);
  await deps.tenants.putKey(hash, tenantId);
  let switched: Awaited<ReturnType<TenantStore['switchKey']>>;
  try {
    switched = await deps.tenants.switchKey(tenantId, old, hash);
  } catch (error) {
    // The write may have applied with its answer lost: the new key is then the only one
    // that works, and must stay. Its item goes only when the tenant is known not to name it.
    const current = await deps.tenants.keyHashOf(tenantId).catch(() => hash);
    if (current !== hash) {
      await deps.tenants.deleteKey(hash, tenantId).catch(() => undefined);
      throw error;
    }
    switched = 'switched';
  }
  if (switched !== 'switched') {
    await deps.tenants.deleteKey(hash, tenantId).catch(() => undefined);
    // Deleted meanwhile: its deletion began after this rotation read the tenant.
    if (switched === 'gone') throw new ApiError('not_found', 'No tenant has this id.');
    throw new ApiError('conflict', "The tenant's key was rotated by another request at the same time; rotate it again if you need a key.");
  }
  // The old key no longer lets anyone in (the tenant names another): removing its item
  // is tidying, and a failure here must not report the rotation as failed. A tenant made
  // before keys could be rotated did not name its key, whose item stays, refused.
  if (old !== null) {
    await deps.tenants.deleteKey(old, tenantId).catch((error: unknown) => {
      deps.logger?.warn("A rotated-away key's item was not removed (it is refused all the same)", { tenant: tenantId, error });
    });
  }
  return { id: tenantId, api_key: apiKey };
}
