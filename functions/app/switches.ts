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
import type { LoggerPort } from '../core/telemetry.ts';
import type { QueueMeta } from '../core/turn.ts';
import type { SwitchInput } from '../core/validation.ts';
import { SCHEDULE_SHARDS } from '../definitions/tables.ts';
import { startRelease } from './delivery/chains.ts';
import type { DeliveryDeps } from './delivery/deps.ts';

/**
 * Releases a lift starts at once: a tenant's webhooks (up to 10,000) started one after
 * the other took some 20 ms each, so a lift of a tenant with a couple of thousand ran
 * past the API's 29 s, and the DELETE sent again started over from the first webhook and
 * never reached the last ones. Started together, their queue sends also share batches.
 */
const RELEASES_AT_ONCE = 16;

/**
 * The most a switch's rings of its tenant's objects take, from their start. A tenant
 * switch is on-call's lever in a flood of new objects (README, A tenant writing many
 * objects at once), when the tenant has hundreds of thousands listed: ringing every one
 * ran past API Gateway's 29 s, so the PUT or DELETE answered 504, and a lift sent again
 * started over from the first shard and never ended. What is left unrung when the time is
 * up is the reconciler's, which rings it within a minute or two (see ringObjects).
 */
export const SWITCH_RINGS_BUDGET_MS = 10_000;

/**
 * The time an invocation keeps after the rings stop: for a lift's releases of the
 * tenant's webhooks (up to 10,000, some 12 s at RELEASES_AT_ONCE) and the answer.
 */
export const SWITCH_RINGS_MARGIN_MS = 15_000;

/** Listed objects read and rung a page at a time: the time is looked at between pages. */
const RING_PAGE = 500;

/**
 * How long a switch's rings have left, in ms of `clock`: SWITCH_RINGS_BUDGET_MS from now,
 * or what the invocation serving the request has left less SWITCH_RINGS_MARGIN_MS, when
 * that is less. In the sandbox no invocation ends, and the budget alone bounds them.
 */
export function switchRingsTimeLeft(clock: () => number = Date.now, invocationLeftMs?: () => number): () => number {
  const startedAt = clock();
  return () =>
    Math.min(SWITCH_RINGS_BUDGET_MS - (clock() - startedAt), (invocationLeftMs?.() ?? Number.POSITIVE_INFINITY) - SWITCH_RINGS_MARGIN_MS);
}

export interface SwitchServiceDeps {
  readonly switches: SwitchStore;
  readonly queues: Pick<QueueStore, 'listedPages' | 'readMetas'>;
  readonly doorbell: Pick<Doorbell, 'ring'>;
  readonly webhooks: Pick<WebhookStore, 'get' | 'list'>;
  readonly tenants: Pick<TenantStore, 'get'>;
  readonly delivery: DeliveryDeps;
  readonly now: () => number;
  readonly logger?: Pick<LoggerPort, 'warn'>;
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

export async function setSwitch(
  deps: SwitchServiceDeps,
  input: SwitchInput,
  ringsTimeLeft: () => number = switchRingsTimeLeft(),
): Promise<Switch> {
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
    await ringObjects(deps, value, `drop-${value.id}-${deps.now()}`, (meta) => meta.scheduled, ringsTimeLeft);
  }
  return value;
}

/**
 * Rings the objects a switch stops, each reading the switches afresh: its resource, or
 * those of its tenant's objects listed in `by_schedule` (those with work, and recently
 * idle ones) whose meta item `wanted` picks. A webhook switch stops no object.
 *
 * A tenant's objects are read and rung a page at a time, every shard at once, while
 * `timeLeft` lasts. Those left unrung when it is up are the reconciler's: it rings a
 * scheduled object that no pause stops, whose last turn found it paused, at its first
 * read of it once that turn is `stuckAfterMs` (90 s) old, and an idle one owing a gap
 * marker once it has been idle as long (the next run, or the first that reaches its
 * shard where the index lists more than one run reads). Every one of those it reads in time,
 * or the request fails (and is sent again): a read or ring that fails is not left to the
 * reconciler, which would make of a passing fault minutes of delay for no reason.
 */
async function ringObjects(
  deps: SwitchServiceDeps,
  value: Switch,
  token: string,
  wanted: (meta: QueueMeta) => boolean,
  timeLeft: () => number,
): Promise<void> {
  if (value.scope === 'resource') {
    await deps.doorbell.ring({ tenantId: value.tenant, resource: value.target as string }, token, { fresh: true });
  }
  if (value.scope !== 'tenant') return;
  let stopped = false;
  let complete = true;
  let rung = 0;
  const ringShard = async (shard: number) => {
    for await (const { keys, more } of deps.queues.listedPages(shard, RING_PAGE, value.tenant)) {
      if (stopped) return;
      const metas = await deps.queues.readMetas(keys, { complete: true });
      const objects = metas.filter(({ meta }) => wanted(meta)).map(({ key }) => key);
      if (stopped) return;
      await Promise.all(objects.map((o) => deps.doorbell.ring(o, token, { fresh: true })));
      rung += objects.length;
      if (more && timeLeft() <= 0) {
        complete = false;
        return;
      }
    }
  };
  // Reads and rings under way when the time is up are not waited for (one that DynamoDB
  // or SQS throttles and the SDK retries may take seconds more): what they miss is the
  // reconciler's, as the pages not read.
  const ringing = Promise.all(Array.from({ length: SCHEDULE_SHARDS }, (_, shard) => ringShard(shard)));
  ringing.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const timeUp = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, Math.max(0, timeLeft()));
  });
  try {
    await Promise.race([ringing, timeUp.then(() => (complete = false))]);
  } finally {
    stopped = true;
    clearTimeout(timer);
  }
  if (!complete) {
    deps.logger?.warn("Out of time ringing a switch's objects: the reconciler rings those left within its next runs", {
      switch: value.id,
      tenant: value.tenant,
      rung,
    });
  }
}

/**
 * Lifts a switch in two steps: marked lifted (out of force for every reader), then,
 * once what it stopped has been woken, removed. A lift that fails in between (SQS or
 * DynamoDB refusing a ring or a release) leaves the switch marked: the DELETE sent
 * again finds it and wakes everything again, where a removed switch would answer 404
 * and leave its objects and held deliveries waiting on nothing.
 */
export async function liftSwitch(deps: SwitchServiceDeps, id: string, ringsTimeLeft: () => number = switchRingsTimeLeft()): Promise<void> {
  const begun = await deps.switches.beginLift(id, deps.now());
  if (!begun) throw new ApiError('not_found', `No switch ${id} is set.`);
  const { lifted, mark } = begun;
  // The index also lists recently idle objects: ring only those with work, or with
  // dropped events still owed their gap marker (they stay listed until it goes out).
  await ringObjects(deps, lifted, `lift-${id}-${deps.now()}`, (meta) => meta.scheduled || meta.switchDropped > 0, ringsTimeLeft);
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
