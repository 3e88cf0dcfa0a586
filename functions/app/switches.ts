/**
 * Setting and lifting kill switches (SPEC §3 Admin). A switch is keyed by its
 * scope, so setting one again on the same scope replaces its action. Setting a
 * drop rings the objects it stops, so that what a pause held there is discarded
 * now. Lifting one wakes what it stopped: paused objects are rung (with a fresh
 * read of the switches), and held deliveries and gap markers are released.
 */
import type { Doorbell } from '../adapters/doorbell.ts';
import type { QueueStore } from '../adapters/queue-store.ts';
import type { SwitchStore } from '../adapters/switch-store.ts';
import type { TenantStore } from '../adapters/tenant-store.ts';
import type { WebhookStore } from '../adapters/webhook-store.ts';
import { eachAtOnce } from '../core/at-once.ts';
import { ApiError } from '../core/errors.ts';
import { derivedId } from '../core/ids.ts';
import type { Switch } from '../core/switches.ts';
import type { QueueMeta } from '../core/turn.ts';
import type { SwitchInput } from '../core/validation.ts';
import { startRelease } from './delivery/chains.ts';
import type { DeliveryDeps } from './delivery/deps.ts';

/**
 * Releases a lift starts at once: a tenant's webhooks (up to 10,000) started one after
 * the other took some 20 ms each, so a lift of a tenant with a couple of thousand ran
 * past the API's 29 s, and the DELETE sent again started over from the first webhook and
 * never reached the last ones. Started together, their queue sends also share batches.
 */
const RELEASES_AT_ONCE = 16;

export interface SwitchServiceDeps {
  readonly switches: SwitchStore;
  readonly queues: Pick<QueueStore, 'scheduledObjects' | 'readMetas'>;
  readonly doorbell: Pick<Doorbell, 'ring'>;
  readonly webhooks: Pick<WebhookStore, 'get' | 'list'>;
  readonly tenants: Pick<TenantStore, 'get'>;
  readonly delivery: DeliveryDeps;
  readonly now: () => number;
}

/** A switch's id: one per scope, so setting one again on the same scope replaces it. */
export function switchId(input: Pick<SwitchInput, 'scope' | 'tenant' | 'target'>): string {
  return derivedId('sw', input.scope, input.tenant, input.target ?? '');
}

/** Why a switch cannot be set: its tenant, or its webhook, is not there (or being deleted). */
async function missingTarget(deps: SwitchServiceDeps, input: SwitchInput): Promise<ApiError | undefined> {
  if (!(await deps.tenants.get(input.tenant))) return new ApiError('not_found', `No tenant ${input.tenant} exists.`);
  if (input.scope === 'webhook' && !(await deps.webhooks.get(input.tenant, input.target as string))) {
    return new ApiError('not_found', `No webhook ${input.target} exists for tenant ${input.tenant}.`);
  }
  return undefined;
}

export async function setSwitch(deps: SwitchServiceDeps, input: SwitchInput): Promise<Switch> {
  const missing = await missingTarget(deps, input);
  if (missing) throw missing;
  const value = await deps.switches.set({ id: switchId(input), ...input, created_at: new Date(deps.now()).toISOString() });
  // A webhook's deletion removes its switch, and a tenant's lifts the switches naming it,
  // each once: one deleted between the look above and the write would leave this switch
  // listed in force and read by every stage for good. Looked at again after the write, a
  // target gone meanwhile takes the switch with it (its deletion, if later, removes it too).
  const gone = await missingTarget(deps, input);
  if (gone) {
    await deps.switches.forget(value.id);
    throw gone;
  }
  if (value.action === 'drop') {
    // A paused object stays scheduled with no doorbell in flight (lifting rings it), and its
    // ingests ring nothing: a drop that replaced a pause on it, or that outranks its tenant's
    // pause, would find its queue untouched until the reconciler took it for stuck, its
    // held events delivered at the lift and new ones filling it towards the cap meanwhile.
    // So ring it now, to read the switches afresh and drain what it holds. (A scheduled
    // object that is not paused gets a second doorbell, which the lease makes harmless.)
    await ringObjects(deps, value, `drop-${value.id}-${deps.now()}`, (meta) => meta.scheduled);
  }
  return value;
}

/**
 * Rings the objects a switch stops, each reading the switches afresh: its resource, or
 * those of its tenant's objects listed in `by_schedule` (those with work, and recently
 * idle ones) whose meta item `wanted` picks. A webhook switch stops no object.
 */
async function ringObjects(deps: SwitchServiceDeps, value: Switch, token: string, wanted: (meta: QueueMeta) => boolean): Promise<void> {
  if (value.scope === 'resource') {
    await deps.doorbell.ring({ tenantId: value.tenant, resource: value.target as string }, token, { fresh: true });
  }
  if (value.scope === 'tenant') {
    const listed = (await deps.queues.scheduledObjects()).filter((o) => o.tenantId === value.tenant);
    // Every one of them, or the request fails (a lift is then sent again): one left unread
    // would wait for the reconciler to find it stuck, minutes on.
    const objects = (await deps.queues.readMetas(listed, { complete: true })).filter(({ meta }) => wanted(meta)).map(({ key }) => key);
    await Promise.all(objects.map((o) => deps.doorbell.ring(o, token, { fresh: true })));
  }
}

/**
 * Lifts a switch in two steps: marked lifted (out of force for every reader), then,
 * once what it stopped has been woken, removed. A lift that fails in between (SQS or
 * DynamoDB refusing a ring or a release) leaves the switch marked: the DELETE sent
 * again finds it and wakes everything again, where a removed switch would answer 404
 * and leave its objects and held deliveries waiting on nothing.
 */
export async function liftSwitch(deps: SwitchServiceDeps, id: string): Promise<void> {
  const begun = await deps.switches.beginLift(id, deps.now());
  if (!begun) throw new ApiError('not_found', `No switch ${id} is set.`);
  const { lifted, mark } = begun;
  // The index also lists recently idle objects: ring only those with work, or with
  // dropped events still owed their gap marker (they stay listed until it goes out).
  await ringObjects(deps, lifted, `lift-${id}-${deps.now()}`, (meta) => meta.scheduled || meta.switchDropped > 0);
  const webhooks =
    lifted.scope === 'webhook'
      ? [await deps.webhooks.get(lifted.tenant, lifted.target as string)]
      : lifted.scope === 'tenant'
        ? await deps.webhooks.list(lifted.tenant)
        : [];
  await eachAtOnce(
    webhooks.flatMap((webhook) => (webhook ? [webhook] : [])),
    RELEASES_AT_ONCE,
    (webhook) => startRelease(deps.delivery, webhook),
  );
  await deps.switches.endLift(id, mark);
}
