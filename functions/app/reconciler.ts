/**
 * The reconciler (SPEC §2): a scheduled sweep over the objects that have work.
 * It re-rings objects that are scheduled but whose doorbell was lost (e.g. an
 * ingest died between its reserve and its send), clears long-expired leases,
 * reports the deepest queues so that on-call can find a hot object, and takes
 * objects idle for `INDEX_LINGER_MS` off the `by_schedule` index. It reads the kill
 * switches: a paused object is not stuck (but rung at once when found stuck after
 * its pause is gone, its lift's ring lost), and an idle object still owing a gap
 * marker for dropped events is rung once no switch stops it (a lift whose ring was
 * lost, or a drop by a stage whose switch cache was a few seconds stale).
 */

import type { Doorbell } from '../adapters/doorbell.ts';
import { METAS_PER_READ, type QueueStore, type RejectedCounts, SHARD_DEEPEST, type ShardSummary } from '../adapters/queue-store.ts';
import type { SwitchStore } from '../adapters/switch-store.ts';
import type { WatchedWebhooks } from '../adapters/webhook-store.ts';
import { eachAtOnce } from '../core/at-once.ts';
import type { SluiceConfig } from '../core/config.ts';
import { scheduleShardNumber } from '../core/keys.ts';
import type { Lane } from '../core/lanes.ts';
import type { ObjectKey } from '../core/model.ts';
import { actionForObject } from '../core/switches.ts';
import type { LoggerPort, MetricsPort } from '../core/telemetry.ts';
import { type QueueMeta, reringsDue } from '../core/turn.ts';
import { scheduleSeconds } from '../definitions/environment.ts';
import { CHAIN_SHARDS, SCHEDULE_SHARDS } from '../definitions/tables.ts';
import type { DeliverQueuePort } from './delivery/deps.ts';

export interface ReconcilerDeps {
  readonly queues: QueueStore;
  readonly doorbell: Pick<Doorbell, 'ring'>;
  readonly switches: Pick<SwitchStore, 'list'>;
  readonly config: SluiceConfig;
  readonly metrics: MetricsPort;
  readonly logger: LoggerPort;
  readonly now: () => number;
  /**
   * The webhooks `by_chain` lists, and the deliver queue: each run sends a check of every
   * webhook one shard lists (a shard on per run), which the delivery function makes
   * (app/delivery/chains.ts `check`: a lost probe or release chain started again, an owed
   * notice sent). Absent where only the sweep of objects is under test.
   */
  readonly chains?: { readonly watched: Pick<WatchedWebhooks, 'list'>; readonly checks: DeliverQueuePort };
  /**
   * How long the run has left (Lambda's remaining time): its rings stop RING_MARGIN_MS
   * short of it, and unlisting idle objects, last, RECONCILE_MARGIN_MS short.
   */
  readonly timeLeftMs?: () => number;
  /** @default LISTED_PAGE */
  readonly listedPageSize?: number;
}

/**
 * The most keys of the `by_schedule` index a run reads before it looks at its time again
 * (a query of keys alone: about 100 KB).
 */
const LISTED_PAGE = 1_000;

/** The time a run keeps for its last writes and its metrics after it stops unlisting idle objects. */
export const RECONCILE_MARGIN_MS = 10_000;

/**
 * The time a run keeps for its metrics after it stops ringing stuck objects: less than
 * RECONCILE_MARGIN_MS, since rings come first and unlisting can wait for the next run.
 */
export const RING_MARGIN_MS = 5_000;

/**
 * How many objects a run works on at once (rings, lease clearing, unlisting). Rings
 * made together share the doorbell's SendMessageBatch requests (up to 10 each); one
 * at a time, each would wait out the batcher's linger and an SQS round trip alone.
 */
const RECONCILE_CONCURRENCY = 16;

export interface QueueView {
  readonly tenant: string;
  readonly resource: string;
  readonly depth: number;
  readonly oldest_age_s: number | null;
  readonly scheduled: boolean;
  /**
   * Its events refused for its rate or queue cap, as the API's containers counted them
   * (each about a second behind: see ingest's countRejected), and when the last was; null when none were in the
   * retention period.
   */
  readonly rejected: RejectedCounts | null;
}

/** How long an idle object stays listed in `by_schedule` after its last reservation or turn. */
export const INDEX_LINGER_MS = 10 * 60_000;

export interface ReconcileReport {
  readonly scheduled: number;
  /** Idle objects taken off the index. */
  readonly unlisted: number;
  readonly rerung: number;
  /** Idle objects rung for the gap marker of their dropped events. */
  readonly markersOwed: number;
  /** Webhooks `by_chain` lists sent a check (see ReconcilerDeps `chains`). */
  readonly webhooksChecked: number;
  readonly leasesCleared: number;
  readonly maxDepth: number;
  readonly nearCap: number;
}

/** When an object last had a reservation or a turn (epoch ms). */
function lastActive(meta: QueueMeta): number {
  return Math.max(meta.reservedAt, meta.turnAt ?? 0);
}

/** Whether a scheduled object has gone without a turn for too long: its doorbell is lost. */
export function isStuck(meta: QueueMeta, now: number, stuckAfterMs: number): boolean {
  if (!meta.scheduled) return false;
  if (meta.leaseUntil !== undefined && meta.leaseUntil > now) return false;
  const lastSign = Math.max(meta.scheduledAt ?? 0, meta.turnAt ?? 0);
  return now - lastSign > stuckAfterMs;
}

export async function reconcile(deps: ReconcilerDeps): Promise<ReconcileReport> {
  const { queues, config, metrics, logger } = deps;
  const now = deps.now();
  // Eventually consistent, for half the read units of a read of every listed object every
  // sweep: what a stale answer can do is harmless. Unlisting and clearing a lease are
  // conditional writes that check what they read; a ring of an object that just had its
  // turn is a duplicate doorbell, which the lease makes harmless; the metrics are a second old.
  // Objects DynamoDB left unread (throttled) are not reconciled by this run: like an object
  // whose write failed, they fail the invocation at its end, for the next sweep to read.
  let unread = 0;
  const timeLeft = () => deps.timeLeftMs?.() ?? Number.POSITIVE_INFINITY;
  const { listed, shardsRead, shards } = await readListed(deps, now, timeLeft, (count) => {
    unread += count;
  });
  if (unread > 0) logger.error('Listed objects left unread (DynamoDB throttled the reads); the next sweep reads them', { unread });
  // Not an error: the objects left are read by the next runs, which start further on.
  const partial = shardsRead < SCHEDULE_SHARDS;
  if (partial) {
    logger.warn('Index shards left for the next sweeps to read: the index lists more objects than one run has the time to read', {
      shardsRead,
      shards: SCHEDULE_SHARDS,
      read: listed.length,
    });
  }
  // One object whose write or ring fails (SQS or DynamoDB refusing it) must not keep the
  // sweep from the others, nor its metrics from being reported: it is logged, the sweep
  // goes on, and the invocation fails at its end (the function's error alarm), to be
  // tried again by the next sweep.
  let failed = 0;
  const each = async (key: ObjectKey, work: () => Promise<void>) => {
    try {
      await work();
    } catch (error) {
      failed++;
      logger.error('An object could not be reconciled; the next sweep tries again', {
        tenant: key.tenantId,
        resource: key.resource,
        error,
      });
    }
  };
  const switches = await deps.switches.list();
  // Rings first, RECONCILE_CONCURRENCY objects at once (so that they share SendMessageBatch
  // requests), while the run has time to report its metrics after them: after a mass
  // loss of doorbells thousands of objects are stuck. Those left are the next run's (see
  // reconcileScheduled).
  const hasTimeToRing = () => timeLeft() > RING_MARGIN_MS;
  let markersOwed = 0;
  const owing = listed.filter(
    ({ key, meta }) =>
      !meta.scheduled &&
      meta.switchDropped > 0 &&
      now - lastActive(meta) > config.stuckAfterMs &&
      actionForObject(switches, key.tenantId, key.resource) === undefined,
  );
  const owingDone = await eachAtOnce(
    owing,
    RECONCILE_CONCURRENCY,
    ({ key, meta }) =>
      each(key, async () => {
        // A fresh read of the switches in the turn, which then sends the marker.
        await deps.doorbell.ring(key, `g${Math.floor(now / config.stuckAfterMs)}`, { fresh: true });
        markersOwed++;
        logger.warn('Rang an idle object for the gap marker of its dropped events', {
          tenant: key.tenantId,
          resource: key.resource,
          dropped: meta.switchDropped,
        });
      }),
    hasTimeToRing,
  );
  const metas = listed.filter(({ meta }) => meta.scheduled);
  let rerung = 0;
  let leasesCleared = 0;
  const depths = emptyTally();
  for (const { meta } of metas) countObject(depths, meta.depth, config.objectQueueCap);
  const { maxDepth, nearCap } = depths;
  // A tenant with more stuck objects than one second's rings in the main lane (a flood of
  // new objects waiting in the bulk lane, or a mass loss of doorbells) is rung in the bulk
  // lane (core/lanes.ts) from the first of them: its rings would otherwise take the main
  // lane's share before its container's count moved them, each run.
  const stuckByTenant = new Map<string, number>();
  for (const { key, meta } of metas) {
    if (isStuck(meta, now, config.stuckAfterMs)) stuckByTenant.set(key.tenantId, (stuckByTenant.get(key.tenantId) ?? 0) + 1);
  }
  const laneOf = (tenantId: string): Lane | undefined =>
    (stuckByTenant.get(tenantId) ?? 0) > config.bulkLaneAfterRingsPerSecond ? 'bulk' : undefined;
  const scheduledDone = await eachAtOnce(
    metas,
    RECONCILE_CONCURRENCY,
    ({ key, meta }) =>
      each(key, async () => {
        const done = await reconcileScheduled(deps, key, meta, now, switches, laneOf(key.tenantId));
        if (done.leaseCleared) leasesCleared++;
        if (done.rerung) rerung++;
      }),
    hasTimeToRing,
  );
  const unrung = owing.length - owingDone + metas.length - scheduledDone;
  if (unrung > 0) logger.warn('Listed objects left for the next sweep to ring or clear: out of time', { left: unrung });
  let webhooksChecked = 0;
  let checksFailed = false;
  if (deps.chains && !hasTimeToRing()) {
    logger.warn("The webhooks of this run's by_chain shard left unchecked for its next sweep: out of time");
  } else if (deps.chains) {
    const checks = await sendChecks(deps, deps.chains, now, hasTimeToRing);
    webhooksChecked = checks.sent;
    checksFailed = checks.failed;
  }
  // Last, the idle objects that have lingered long enough are taken off the index, as
  // many at once as RECONCILE_CONCURRENCY and while the run has time: on a busy deployment
  // the index lists every object active in the last 10 minutes, tens of thousands, and
  // the re-rings and the metrics above must not wait behind them. What is left over is
  // unlisted by the next run.
  const idle = listed.filter(({ meta }) => !meta.scheduled && now - lastActive(meta) > INDEX_LINGER_MS);
  let unlisted = 0;
  const next = await eachAtOnce(
    idle,
    RECONCILE_CONCURRENCY,
    ({ key, meta }) =>
      each(key, async () => {
        if (await queues.unlistIdle(key, meta.reservedAt)) unlisted++;
      }),
    () => timeLeft() > RECONCILE_MARGIN_MS,
  );
  if (next < idle.length) logger.info('Idle objects left listed for the next sweep: out of time', { left: idle.length - next });
  // What the index holds: this run's findings with what the last runs noted of the shards
  // it did not read (all of it, from a run that read every shard).
  const whole = unread === 0 ? await wholeIndex(deps, shards, metas, now) : undefined;
  metrics.count('ScheduledObjects', whole?.scheduled ?? metas.length);
  metrics.count('StuckObjectsRerung', rerung);
  metrics.count('StaleLeasesCleared', leasesCleared);
  // Only when some were sent: a metric that every run sends with nothing in it is billed
  // ($0.30 a month) in a deployment with no failing endpoint.
  if (webhooksChecked > 0) metrics.count('WebhooksChecked', webhooksChecked);
  // A run that left objects unread knows a lower bound of these: the one it missed may be the
  // deepest (a hot object). It reports an object near its cap, but not that none is, which
  // would clear object-queue-near-cap; the alarm keeps what the last complete run said.
  // So does a run that read only some shards of the index, while some shard it did not
  // read has not been read in the last rotation of the shards.
  if (whole) metrics.count('MaxObjectDepth', whole.maxDepth);
  if (whole || nearCap > 0) metrics.count('ObjectsNearCap', whole?.nearCap ?? nearCap);
  const deepest = [...metas].sort((a, b) => b.meta.depth - a.meta.depth).slice(0, 5);
  if (deepest.length > 0 && (deepest[0]?.meta.depth ?? 0) > 0) {
    logger.info('Deepest object queues', {
      deepest: deepest.map(({ key, meta }) => ({ tenant: key.tenantId, resource: key.resource, depth: meta.depth })),
    });
  }
  if (failed > 0 || unread > 0 || checksFailed) {
    const objects = failed + unread > 0 ? `${failed + unread} of ${listed.length + unread} listed objects could not be reconciled` : '';
    const checks = checksFailed ? "the checks of a shard's watched webhooks were not all sent" : '';
    throw new Error(`${[objects, checks].filter(Boolean).join('; ')} (logged); the next sweep tries again`);
  }
  return { scheduled: metas.length, unlisted, rerung, markersOwed, webhooksChecked, leasesCleared, maxDepth, nearCap };
}

/** How far apart the reconciler's runs are (ms): a minute at the least, as AWS runs it. */
function runIntervalMs(config: SluiceConfig): number {
  return scheduleSeconds(config.reconcileIntervalSeconds) * 1000;
}

/**
 * The number of the run interval `now` falls in: the index shards a run reads move on by
 * one each interval (`by_schedule`'s first shard, `by_chain`'s one), counted in intervals
 * of a minute at the least, as AWS runs it: counted in shorter ones, each run would start
 * some shards on from the one before (two at 30 s), and a shard never first would never be read.
 */
function runNumber(config: SluiceConfig, now: number): number {
  return Math.floor(now / runIntervalMs(config));
}

/** Checks sent in one go: they share SendMessageBatch requests, and the run's time is looked at between them. */
const CHECKS_AT_ONCE = 100;

/**
 * Sends a check of every webhook that one shard of `by_chain` lists, a shard on per run
 * (counted in intervals, as the `by_schedule` shards are): each listed webhook is checked
 * every CHAIN_SHARDS runs, five minutes apart in AWS, against a chain counted lost after
 * 20 (CHAIN_LOST_AFTER_MS). Stops while the run has time, and at a read or send that
 * fails (logged: the run then fails at its end, and the next sweep of the shard sends
 * them). Answers how many were sent, those before a failure too, and whether one failed.
 */
async function sendChecks(
  deps: ReconcilerDeps,
  chains: NonNullable<ReconcilerDeps['chains']>,
  now: number,
  hasTime: () => boolean,
): Promise<{ sent: number; failed: boolean }> {
  const shard = runNumber(deps.config, now) % CHAIN_SHARDS;
  let sent = 0;
  try {
    const listed = await chains.watched.list(shard);
    for (let at = 0; at < listed.length && hasTime(); at += CHECKS_AT_ONCE) {
      const checks = listed
        .slice(at, at + CHECKS_AT_ONCE)
        .map(({ tenantId, webhookId }) => ({ kind: 'check' as const, tenantId, webhookId, sentAt: now }));
      await chains.checks.send(checks);
      sent += checks.length;
    }
    if (sent < listed.length) {
      deps.logger.warn('Webhooks left unchecked for the next sweep of their shard: out of time', { left: listed.length - sent });
    }
    return { sent, failed: false };
  } catch (error) {
    deps.logger.error('Webhooks listed for a lost chain were not all sent a check; the next sweep of their shard sends them', {
      sent,
      error,
    });
    return { sent, failed: true };
  }
}

/**
 * The listed objects a run reads, shard of the `by_schedule` index by shard, from one
 * that moves on by a shard each interval (a minute at the least, as AWS runs it), while the run has more than half its time
 * (less RING_MARGIN_MS) left: the rest is for ringing and unlisting what it read.
 * Every listed object's meta item is read each run, so the reads grow with the index
 * (every object active in the last 10 minutes: some 13 s a run for 100,000 in AWS, see
 * README), and a run that read the whole of a larger one before anything else would
 * reach its timeout (60 s) before it rang or unlisted a single object, run after run:
 * stuck objects would stay stuck, and the index, which only this unlisting shrinks,
 * would never shrink. The same holds within a shard: a flood of new objects (one tenant
 * at its throttle writes 50,000 a second) lists millions, a 16th of them more than one
 * run reads (some 230,000 in its 30 s), so a shard is read a page of LISTED_PAGE keys at
 * a time while there is time, and a run that stops within one reads the rest of it
 * another time (its head, unlisted meanwhile, no longer in the way). At least one page
 * is read. Only the shards read whole are returned in `shards` (their summaries are
 * noted for the whole index). Meta items are read in full batches as keys come, so a
 * run that reads every shard makes the requests one read of all makes.
 */
async function readListed(
  deps: ReconcilerDeps,
  now: number,
  timeLeft: () => number,
  onUnread: (count: number) => void,
): Promise<{ listed: Array<{ key: ObjectKey; meta: QueueMeta }>; shardsRead: number; shards: number[] }> {
  const start = timeLeft();
  const stopAt = RING_MARGIN_MS + (start - RING_MARGIN_MS) / 2;
  const hasTimeToRead = () => !Number.isFinite(start) || timeLeft() > stopAt;
  // One shard on per run (see `runNumber`).
  const first = runNumber(deps.config, now) % SCHEDULE_SHARDS;
  const listed: Array<{ key: ObjectKey; meta: QueueMeta }> = [];
  const keys: ObjectKey[] = [];
  const read = async (count: number) => {
    if (count > 0) listed.push(...(await deps.queues.readMetas(keys.splice(0, count), { consistent: false, onUnread })));
  };
  let shardsRead = 0;
  let outOfTime = false;
  while (shardsRead < SCHEDULE_SHARDS && !outOfTime) {
    let whole = true;
    for await (const page of deps.queues.listedPages((first + shardsRead) % SCHEDULE_SHARDS, deps.listedPageSize ?? LISTED_PAGE)) {
      keys.push(...page.keys);
      await read(keys.length - (keys.length % METAS_PER_READ));
      if (!hasTimeToRead()) {
        outOfTime = true;
        whole = !page.more;
        break;
      }
    }
    if (whole) shardsRead++;
  }
  await read(keys.length);
  return { listed, shardsRead, shards: Array.from({ length: shardsRead }, (_, n) => (first + n) % SCHEDULE_SHARDS) };
}

/**
 * The index as a whole, from what this run read of its shards (noted for the runs after it)
 * and what the runs before it noted of the others, when each of those was read within one
 * rotation of the shards (SCHEDULE_SHARDS runs, and one more); undefined when one was not,
 * or the note could not be made. Without it, a large index, of which every run reads only
 * some shards, would never again report MaxObjectDepth, nor clear object-queue-near-cap.
 */
async function wholeIndex(
  deps: ReconcilerDeps,
  shards: readonly number[],
  metas: ReadonlyArray<{ key: ObjectKey; meta: QueueMeta }>,
  now: number,
): Promise<DepthTally | undefined> {
  const read = new Map(shards.map((shard) => [shard, { ...emptyTally(), deepest: [] as Array<{ key: ObjectKey; depth: number }> }]));
  for (const { key, meta } of metas) {
    const found = read.get(scheduleShardNumber(key, SCHEDULE_SHARDS));
    if (!found) continue;
    countObject(found, meta.depth, deps.config.objectQueueCap);
    if (meta.depth > 0) found.deepest.push({ key, depth: meta.depth });
  }
  // Each shard's deepest, for the view of the deepest queues to read first (see deepestQueues).
  for (const summary of read.values()) summary.deepest = summary.deepest.sort((a, b) => b.depth - a.depth).slice(0, SHARD_DEEPEST);
  let noted: Map<number, ShardSummary>;
  try {
    noted = await deps.queues.noteShardSummaries(read, now);
  } catch (error) {
    deps.logger.warn("The index shards' summaries could not be noted; metrics of the shards read only", { error });
    return undefined;
  }
  const since = now - (SCHEDULE_SHARDS + 1) * runIntervalMs(deps.config);
  const whole = emptyTally();
  for (let shard = 0; shard < SCHEDULE_SHARDS; shard++) {
    const summary = noted.get(shard);
    if (!summary || summary.at < since) return undefined;
    whole.nearCap += summary.nearCap;
    whole.maxDepth = Math.max(whole.maxDepth, summary.maxDepth);
    whole.scheduled += summary.scheduled;
  }
  return whole;
}

/** Scheduled objects counted: how many, the deepest's depth, and how many are above 80 % of their cap. */
type DepthTally = { -readonly [K in keyof Omit<ShardSummary, 'at' | 'deepest'>]: ShardSummary[K] };

function emptyTally(): DepthTally {
  return { nearCap: 0, maxDepth: 0, scheduled: 0 };
}

/** Counts one scheduled object of `depth` in `tally`. */
function countObject(tally: DepthTally, depth: number, cap: number): void {
  tally.scheduled++;
  tally.maxDepth = Math.max(tally.maxDepth, depth);
  if (depth > 0.8 * cap) tally.nearCap++;
}

/** A scheduled object: its stale lease cleared, and rung when it is stuck. */
async function reconcileScheduled(
  deps: ReconcilerDeps,
  key: ObjectKey,
  meta: QueueMeta,
  now: number,
  switches: Awaited<ReturnType<ReconcilerDeps['switches']['list']>>,
  lane: Lane | undefined,
): Promise<{ leaseCleared: boolean; rerung: boolean }> {
  const { queues, config, logger } = deps;
  const leaseCleared =
    meta.leaseUntil !== undefined && meta.leaseUntil + config.leaseMs < now && (await queues.clearStaleLease(key, meta.leaseUntil));
  // A paused object waits on purpose: lifting the switch rings it.
  if (isStuck(meta, now, config.stuckAfterMs) && actionForObject(switches, key.tenantId, key.resource) !== 'pause') {
    if (meta.pausedAt !== undefined) {
      // Its last turn found it paused and acknowledged its doorbell, and no pause stops it
      // now: the ring of its lift (or of the drop that replaced the pause) was lost. Its
      // time without a turn was spent paused, so the spacings below, counted from that
      // turn, would ring it only at the next one, up to an hour on: ring it now, and count
      // its time without a turn from this ring.
      await deps.doorbell.ring(key, `p${meta.pausedAt}`, { ...(lane && { lane }) });
      await queues.restartStuckClock(key, meta.pausedAt, now);
      logger.warn('Rang a stuck object no pause stops any more', { tenant: key.tenantId, resource: key.resource, depth: meta.depth });
      return { leaseCleared, rerung: true };
    }
    // A duplicate doorbell is harmless (the lease admits one holder; an empty turn
    // goes idle), so ringing when unsure is safe; but not once a sweep. A ring falls
    // due at growing spacings (reringsDue), and the one sent is noted on the object,
    // so that it is sent once, by whichever run first has the time: after a mass loss
    // of doorbells a run that runs out of time leaves the rest to the next run, where
    // a lookback of a run or two left them waiting for their next spacing (up to an
    // hour), most runs ringing nothing. Its token also collapses at SQS a second ring
    // of the same one (a run whose note failed).
    const lastSign = Math.max(meta.scheduledAt ?? 0, meta.turnAt ?? 0);
    const rerung = `${lastSign}.${reringsDue(now - lastSign, config.stuckAfterMs)}`;
    if (meta.rerung === rerung) return { leaseCleared, rerung: false };
    await deps.doorbell.ring(key, `r${rerung}`, { ...(lane && { lane }) });
    await queues.noteRerung(key, rerung);
    logger.warn('Re-rang a stuck object', { tenant: key.tenantId, resource: key.resource, depth: meta.depth });
    return { leaseCleared, rerung: true };
  }
  return { leaseCleared, rerung: false };
}

/**
 * The most a view of the deepest queues takes, from its start: well inside API
 * Gateway's 29 s, after which the caller gets a 504 and nothing of what was read.
 */
export const QUEUES_VIEW_BUDGET_MS = 15_000;

/**
 * The time a view keeps after it stops reading the index: for the reads of its answer's
 * objects (their oldest event and refusals) and the response, and for a page's reads
 * still under way (a page is left out when they are not done when the time comes).
 */
export const QUEUES_VIEW_MARGIN_MS = 5_000;

/**
 * Listed objects a page of a shard holds for the view: the view looks at its time
 * between pages, and a page's meta items are 5 BatchGetItem requests.
 */
const QUEUES_VIEW_PAGE = 500;

/** `GET /v1/admin/queues`'s answer (README, The deepest object queues). */
export interface QueuesAnswer {
  readonly data: QueueView[];
  /**
   * Whether every listed object was read in time: when not, `data` is the deepest of
   * those that were and of the shards' deepest as the reconciler's last runs saw them.
   */
  readonly complete: boolean;
  /** When not complete: how many listed objects the view read. */
  readonly objects_read?: number;
  /**
   * When not complete: how many objects are scheduled, as the reconciler's last runs
   * counted them in each shard; null when a shard has no count noted.
   */
  readonly objects_scheduled?: number | null;
}

/**
 * How long a view of the queues has left, in ms of `clock`: QUEUES_VIEW_BUDGET_MS from
 * now, or what the invocation serving it has left (Lambda's remaining time) when that
 * is less. In the sandbox no invocation ends, and the budget alone bounds it.
 */
export function queuesViewTimeLeft(clock: () => number, invocationLeftMs?: () => number): () => number {
  const startedAt = clock();
  return () => Math.min(QUEUES_VIEW_BUDGET_MS - (clock() - startedAt), invocationLeftMs?.() ?? Number.POSITIVE_INFINITY);
}

type Listed = { key: ObjectKey; meta: QueueMeta };

/**
 * The deepest object queues, deepest first, for `GET /v1/admin/queues`, read while
 * `timeLeftMs` (real ms) is more than QUEUES_VIEW_MARGIN_MS. The index lists every
 * object active in the last 10 minutes, and in a flood of new objects (README, A tenant
 * writing many objects at once) millions: a view that read them all ran past API
 * Gateway's 29 s (a 504), during the very incident it is for, at half a read unit an object.
 * So it first reads the objects the reconciler's last runs found deepest in each shard
 * (their summaries, one read), then the shards page by page, all shards at once, keeping
 * the deepest `limit` of what it read; it answers when its time is up, with pages still
 * under way left out, and says it is not complete. Every depth is read afresh, never
 * taken from a summary.
 */
export async function deepestQueues(
  deps: Pick<ReconcilerDeps, 'queues' | 'now'>,
  limit: number,
  timeLeftMs: () => number,
): Promise<QueuesAnswer> {
  const hasTime = () => timeLeftMs() > QUEUES_VIEW_MARGIN_MS;
  const idOf = (key: ObjectKey) => `${key.tenantId}\n${key.resource}`;
  const top = new Map<string, Listed>();
  let stopped = false;
  let complete = true;
  let objectsRead = 0;
  let summaries = new Map<number, ShardSummary>();
  // Kept while the view reads: what a read ends after its time is up is left out, so
  // that the answer is the same as what was counted.
  const keep = (found: readonly Listed[]) => {
    if (stopped) return false;
    for (const listed of found) if (listed.meta.scheduled || listed.meta.depth > 0) top.set(idOf(listed.key), listed);
    if (top.size > limit) {
      const deepest = [...top].sort(([, a], [, b]) => b.meta.depth - a.meta.depth);
      for (const [id] of deepest.slice(limit)) top.delete(id);
    }
    return true;
  };
  // Objects DynamoDB left unread (throttled) are not in the answer: it is not complete.
  const onUnread = () => {
    complete = false;
  };
  const read = async () => {
    summaries = await deps.queues.shardSummaries();
    const candidates = new Map<string, ObjectKey>();
    for (const summary of summaries.values()) for (const { key } of summary.deepest) candidates.set(idOf(key), key);
    // A view for on-call: a second old is as good (see reconcile).
    keep(await deps.queues.readMetas([...candidates.values()], { consistent: false, onUnread }));
    await Promise.all(
      Array.from({ length: SCHEDULE_SHARDS }, async (_, shard) => {
        for await (const { keys, more } of deps.queues.listedPages(shard, QUEUES_VIEW_PAGE)) {
          if (!hasTime()) {
            complete = false;
            return;
          }
          // The candidates were read already.
          const fresh = keys.filter((key) => !candidates.has(idOf(key)));
          if (keep(await deps.queues.readMetas(fresh, { consistent: false, onUnread }))) objectsRead += keys.length;
          if (more && !hasTime()) {
            complete = false;
            return;
          }
        }
      }),
    );
  };
  // The reads under way when the time is up are not waited for: one that DynamoDB
  // throttles and the SDK retries may take seconds more.
  const reading = read();
  reading.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const timeUp = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, Math.max(0, timeLeftMs() - QUEUES_VIEW_MARGIN_MS));
  });
  try {
    await Promise.race([reading, timeUp.then(() => (complete = false))]);
  } finally {
    stopped = true;
    clearTimeout(timer);
  }
  const now = deps.now();
  const data = await Promise.all(
    [...top.values()]
      .sort((a, b) => b.meta.depth - a.meta.depth)
      .slice(0, limit)
      .map(async ({ key, meta }) => {
        const [oldest, rejected] = await Promise.all([
          meta.depth > 0 ? deps.queues.oldestPendingAt(key, meta) : undefined,
          deps.queues.rejectedCounts(key, now),
        ]);
        return {
          tenant: key.tenantId,
          resource: key.resource,
          depth: meta.depth,
          oldest_age_s: oldest === undefined ? null : Math.max(0, Math.round((now - oldest) / 1000)),
          scheduled: meta.scheduled,
          rejected: rejected ?? null,
        };
      }),
  );
  if (complete) return { data, complete };
  const counted = [...summaries.values()];
  const objectsScheduled = counted.length === SCHEDULE_SHARDS ? counted.reduce((sum, { scheduled }) => sum + scheduled, 0) : null;
  return { data, complete, objects_read: objectsRead, objects_scheduled: objectsScheduled };
}
