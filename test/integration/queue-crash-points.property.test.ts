/**
 * The per-object queue protocol with a crash at any step, against the embedded
 * DynamoDB: each command (an ingest, a turn, a reconciler run) may die at its Nth call
 * out (a DynamoDB request, before it is sent or after it applied; a doorbell ring; a
 * delivery send), or have that one call fail and go on: unsent (a throttled request),
 * applied but answered an error, or applied with its answer lost, so that the SDK sends
 * it again. Then, with no more faults, time passes and the doorbells and the reconciler
 * run until nothing is scheduled. Every event answered accepted is distributed, nothing
 * is distributed that no ingest sent, and each object's seqs are 1..N, one event each,
 * first distributed in order. The producer sends again what README says to (events
 * answered internal or conflict, a request with no answer, and, with the object's next
 * events, those refused for its cap or rate), keys or not: what it meant
 * once is distributed once, only if it was answered stored, and in the order it meant,
 * unless a request that carried it died. The real ingest, distributor and reconciler
 * code runs; only the two queues around them are simulated in memory. CRASH_RUNS (150
 * a property by default, about 20 s each) to hunt.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { IdempotencyStore } from '../../functions/adapters/idempotency-store.ts';
import { QueueStore, type QuietSnapshot } from '../../functions/adapters/queue-store.ts';
import { Distributor } from '../../functions/app/distributor.ts';
import { publish } from '../../functions/app/ingest.ts';
import { reconcile } from '../../functions/app/reconciler.ts';
import { buildConfig } from '../../functions/core/config.ts';
import type { DeliveredEvent, GapMarker, ObjectKey, Webhook } from '../../functions/core/model.ts';
import type { Switch, SwitchAction } from '../../functions/core/switches.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';
import { webhookFixture } from '../support/fixtures.ts';
import {
  expectFirstSentInSeqOrder,
  expectOneEventPerSeq,
  expectOneSeqPerEvent,
  PROTOCOL_OBJECTS,
  PROTOCOL_SETTINGS,
  protocolDeps,
  quiesce,
} from '../support/queue-protocol.ts';

const OBJECTS = PROTOCOL_OBJECTS;

const everything: Webhook = webhookFixture({ id: 'wh_all' });

/** An event the producer publishes: its number (in `data`, and in its key's name) tells it apart. */
interface Input {
  readonly resource: string;
  readonly parents: never[];
  readonly type: string;
  readonly data: { readonly n: number };
  readonly idempotencyKey: string | undefined;
}

/** What the producer knows of an event it means to publish once. */
interface Meant {
  readonly keyed: boolean;
  /** A request that carried it died: its producer got no answer. */
  died: boolean;
  /** It was answered stored: accepted, or a duplicate of a key's event. */
  stored: boolean;
}

/**
 * How a command's Nth call out fails: the command dies there (before or after the call
 * applied); that call alone fails unsent (a throttle past the SDK's retries); it applies
 * but answers an error no one tries again (a 500 after the write, or the SDK's later
 * tries throttled); or it applies and its answer is lost, so that the SDK (or, for a
 * simulated queue, the caller) sends it again.
 */
type FaultMode = 'dieBefore' | 'dieAfter' | 'failOne' | 'failAfter' | 'loseAnswer';
interface Fault {
  readonly at: number;
  readonly mode: FaultMode;
}

type Command =
  | { kind: 'ingest'; object: number; count: number; keyed: boolean; fault?: Fault }
  | { kind: 'turn'; object: number; pick: number; duplicate: boolean; fault?: Fault }
  | { kind: 'race'; object: number; fault?: Fault }
  | { kind: 'advance'; ms: number }
  | { kind: 'reconcile'; fault?: Fault }
  | { kind: 'switch'; object: number; action: SwitchAction | 'lift' };

const faultArb: fc.Arbitrary<Fault | undefined> = fc.option(
  fc.record({
    // Mostly among a command's first calls, which every command makes.
    at: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 12 })),
    mode: fc.constantFrom<FaultMode>('dieBefore', 'dieAfter', 'failOne', 'failAfter', 'loseAnswer'),
  }),
  { nil: undefined, freq: 2 },
);

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('ingest' as const),
      object: fc.nat(1),
      // One event as often as not: an idle object's one event is kept on its meta item.
      count: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 6 })),
      keyed: fc.boolean(),
      fault: faultArb,
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('turn' as const),
      object: fc.nat(1),
      pick: fc.nat(3),
      duplicate: fc.boolean(),
      fault: faultArb,
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 8_000 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('race' as const), object: fc.nat(1), fault: faultArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reconcile' as const), fault: faultArb }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('switch' as const),
      object: fc.nat(1),
      action: fc.constantFrom<SwitchAction | 'lift'>('drop', 'pause', 'lift', 'lift'),
    }),
  },
);

/** With clock jumps of a day or so too, past which events of a 2-day retention period expire. */
const longCommandArb: fc.Arbitrary<Command> = fc.oneof(
  { weight: 12, arbitrary: commandArb },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 20 * 3_600_000, max: 30 * 3_600_000 }) }),
  },
);

/** The fault of the command under way, and how many calls out it has made. */
class FaultPoint {
  #fault: Fault | undefined;
  #calls = 0;
  #dead = false;

  arm(fault: Fault | undefined): void {
    this.#fault = fault;
    this.#calls = 0;
    this.#dead = false;
  }

  /** Before a call out: throws if the command is dead, or dies (or fails) at this call. */
  before(): void {
    if (this.#dead) throw new Error('crashed (dead)');
    this.#calls += 1;
    if (this.#fault?.at !== this.#calls) return;
    if (this.#fault.mode === 'dieBefore') {
      this.#dead = true;
      throw new Error('crashed before the call');
    }
    if (this.#fault.mode === 'failOne') throw new Error('this call failed');
  }

  /** Whether the command under way has died (its producer gets no answer). */
  get dead(): boolean {
    return this.#dead;
  }

  /** Whether the call out that just applied loses its answer, to be sent again. */
  losesAnswer(): boolean {
    return this.#fault?.mode === 'loseAnswer' && this.#fault.at === this.#calls && !this.#dead;
  }

  /** After a call out applied: dies here, or answers an error, if so armed. */
  after(): void {
    if (this.#fault?.at !== this.#calls || this.#dead) return;
    if (this.#fault.mode === 'dieAfter') {
      this.#dead = true;
      throw new Error('crashed after the call applied');
    }
    if (this.#fault.mode === 'failAfter') throw new Error('this call applied, but answered an error');
  }

  /** A call to a simulated queue: one whose answer is lost is sent again, as the SQS SDK would. */
  async around<T>(call: () => Promise<T>): Promise<T> {
    this.before();
    const result = await call();
    if (this.losesAnswer()) return call();
    this.after();
    return result;
  }
}

let emulators: Emulators;
/** The stores and config of a property: a retention period of 7 days, or 2 days that clock jumps of a day pass. */
interface Rig {
  readonly config: ReturnType<typeof buildConfig>;
  readonly store: QueueStore;
  readonly idempotency: IdempotencyStore;
}
let week: Rig;
let twoDays: Rig;
const point = new FaultPoint();
let run = 0;

beforeAll(async () => {
  emulators = await startEmulators();
  const tables = await createTables(new DynamoDBClient({ ...emulators.dynamo }));
  const client = documentClient(emulators.dynamo);
  // Every DynamoDB request passes the fault point, before it is sent and after it applied
  // (its answer then lost to a dead caller, or an error: plain ones, which the SDK does not
  // retry; or lost on the way, a reset connection, which the SDK does: its next try passes
  // the point as a call of its own).
  client.middlewareStack.add(
    (next) => async (args) => {
      point.before();
      const result = await next(args);
      if (point.losesAnswer()) throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
      point.after();
      return result;
    },
    { step: 'deserialize', name: 'faultPoint' },
  );
  const rigOf = (retentionDays: number): Rig => ({
    config: buildConfig({ ...PROTOCOL_SETTINGS, retentionDays }),
    store: new QueueStore({ client, tableName: tables.Events as string, retentionDays }),
    idempotency: new IdempotencyStore({
      client,
      tableName: tables.Events as string,
      retentionDays,
      ingestGraceMs: PROTOCOL_SETTINGS.ingestGraceMs,
    }),
  });
  week = rigOf(7);
  twoDays = rigOf(2);
});

afterAll(async () => {
  await emulators?.stop();
});

async function execute(commands: readonly Command[], rig: Rig): Promise<void> {
  const { config, store, idempotency } = rig;
  const tenantId = `ten_crash${++run}`;
  const keys: ObjectKey[] = OBJECTS.map((resource) => ({ tenantId, resource }));
  // The objects whose last turn that took them failed or died, with no turn ended since
  // (idle or rerung): what it sent on before its commit is still to be sent again; those
  // a drop was set on meanwhile; and those left so while days passed (paused).
  const unfinished = new Set<string>();
  const droppedUnfinished = new Set<string>();
  const unfinishedOverDays = new Set<string>();
  type Ring = { token: string; quiet: boolean; snapshot?: QuietSnapshot; fresh?: boolean };
  const doorbells = new Map<string, Ring[]>(OBJECTS.map((r) => [r, []]));
  let rings = 0;
  const doorbell = {
    ring: (key: ObjectKey, token: string, options: { quiet?: boolean; snapshot?: QuietSnapshot } = {}) =>
      point.around(async () => {
        doorbells
          .get(key.resource)
          ?.push({ token, quiet: options.quiet === true, ...(options.snapshot && ++rings % 2 === 0 && { snapshot: options.snapshot }) });
      }),
  };
  const delivered: DeliveredEvent[] = [];
  const markers: GapMarker[] = [];
  // Resource switches, set and lifted as the API does (a drop or a lift rings the object to read them afresh).
  const switches = new Map<string, Switch>();
  const switchList = async () => [...switches.values()];
  // Each event the producer means to publish, by its number.
  const meant: Meant[] = [];
  const meaning = (input: Input) => meant[input.data.n] as Meant;
  // By object, the events it refused for its cap or rate, to be sent again.
  const refused = new Map<string, Input[]>();
  const deps = protocolDeps({ store, idempotency, config, doorbell, run, switches: switchList });
  const { now, advance } = deps;
  const distributor = new Distributor({
    queues: store,
    switches: { current: switchList, refresh: switchList },
    subscriptions: { onResource: async () => [everything] },
    deliveries: {
      send: (messages) =>
        point.around(async () => {
          for (const m of messages) {
            for (const e of m.events) {
              if (e.type === 'sluice.gap') markers.push(e as GapMarker);
              else delivered.push(e as DeliveredEvent);
            }
          }
        }),
    },
    ...deps.turn,
  });
  const { ingest, reconciler } = deps;
  const accepted = new Map<string, string>(); // event id → resource

  const ringFresh = (key: ObjectKey) => void doorbells.get(key.resource)?.push({ token: `switch-${now()}`, quiet: false, fresh: true });

  const turn = async (object: number, pick: number, duplicate: boolean, given?: Ring) => {
    const key = keys[object] as ObjectKey;
    const queue = doorbells.get(key.resource) as Ring[];
    if (!given && queue.length === 0) return;
    const index = pick % Math.max(1, queue.length);
    const [ring] = given ? [given] : (queue.splice(index, 1) as [Ring]);
    try {
      const { outcome } = await distributor.runTurn(key, `holder-${now()}-${Math.random()}`, {
        quiet: ring.quiet,
        freshSwitches: ring.fresh === true,
        ...(ring.snapshot && { snapshot: ring.snapshot }),
      });
      if (outcome === 'idle' || outcome === 'rerung') unfinished.delete(key.resource);
    } catch {
      // The invocation failed or died: SQS delivers this doorbell again (received again, it carries no trusted snapshot).
      unfinished.add(key.resource);
      queue.unshift({ token: ring.token, quiet: ring.quiet, fresh: ring.fresh === true });
      return;
    }
    if (duplicate) queue.push({ token: ring.token, quiet: ring.quiet, fresh: ring.fresh === true });
  };

  for (const command of commands) {
    switch (command.kind) {
      case 'ingest': {
        const key = keys[command.object] as ObjectKey;
        // What the object refused for its cap or rate before goes first, then the new events.
        let inputs: Input[] = [
          ...(refused.get(key.resource) ?? []),
          ...Array.from({ length: command.count }, () => {
            const n = meant.push({ keyed: command.keyed, died: false, stored: false }) - 1;
            return { resource: key.resource, parents: [], type: 'p.t', data: { n }, idempotencyKey: command.keyed ? `k${n}` : undefined };
          }),
        ];
        refused.delete(key.resource);
        const later: Input[] = [];
        // A producer as README has it: it sends again, in their order, the events answered
        // internal or conflict (after the ingest grace, when a key's claim left pending by a
        // dead request is settled), and all of them when it got no answer (a 500, or the
        // function died: with no key, those it stored are then stored twice); those refused
        // for the object's cap or rate, after its Retry-After (here: with its next events).
        for (let tries = 0; tries < 3 && inputs.length > 0; tries++) {
          point.arm(tries === 0 ? command.fault : undefined);
          let again: Input[] = [];
          const limited: Input[] = [];
          try {
            const outcome = await publish(ingest, tenantId, inputs);
            outcome.results.forEach((r, i) => {
              const input = inputs[i] as Input;
              if (r.status === 'accepted') accepted.set(r.id, key.resource);
              if (r.status !== 'rejected') meaning(input).stored = true;
              else if (['internal', 'conflict'].includes(r.error.code)) again.push(input);
              else if (['queue_full', 'rate_limited'].includes(r.error.code)) limited.push(input);
            });
          } catch {
            // The producer got no 202: none of its events counts as accepted.
            again = inputs;
          }
          if (point.dead) {
            for (const input of inputs) meaning(input).died = true;
            again = inputs;
          } else later.push(...limited);
          point.arm(undefined);
          const keyed = inputs.some((input) => input.idempotencyKey !== undefined);
          inputs = again;
          if (keyed) advance(config.ingestGraceMs + 1);
        }
        if (later.length > 0)
          refused.set(
            key.resource,
            later.sort((a, b) => a.data.n - b.data.n),
          );
        break;
      }
      case 'turn':
        point.arm(command.fault);
        await turn(command.object, command.pick, command.duplicate);
        point.arm(undefined);
        break;
      case 'race': {
        // Two turns of one object at once: its next two doorbells (a ring in each lane), or its
        // next one and a copy of it (SQS handing it out again to another worker while the first
        // one's turn still runs: received again, it trusts no snapshot).
        const queue = doorbells.get((keys[command.object] as ObjectKey).resource) as Ring[];
        const first = queue.shift();
        if (!first) break;
        const second = queue.shift() ?? { token: first.token, quiet: first.quiet, fresh: first.fresh === true };
        point.arm(command.fault);
        await Promise.all([turn(command.object, 0, false, first), turn(command.object, 0, false, second)]);
        point.arm(undefined);
        break;
      }
      case 'advance':
        // Hours do not pass on a turn that failed: within minutes, SQS hands its doorbell out
        // again (after the dead holder's lease) or the reconciler rings the object, and its
        // next turn sends again what it sent before its commit. The distributor counts on it
        // (see EXPIRY_MARGIN_MS): a day later, an event it sent could have expired, and its
        // seq would go to the next event. A whole day's outage is not what this models; a
        // pause that outlasts the retention period after such a turn is (README, Not covered).
        if (command.ms >= 3_600_000) {
          for (let o = 0; o < keys.length; o++) {
            const resource = (keys[o] as ObjectKey).resource;
            const queue = doorbells.get(resource) as Ring[];
            for (let round = 0; round < 5 && unfinished.has(resource); round++) {
              if (switches.get(`sw_${resource}`)?.action === 'pause') break;
              advance(config.stuckAfterMs + config.leaseMs + 1);
              await reconcile(reconciler).catch(() => undefined);
              for (let guard = 0; guard < 20 && queue.length > 0 && unfinished.has(resource); guard++) await turn(o, 0, false);
            }
            if (unfinished.has(resource)) unfinishedOverDays.add(resource);
          }
        }
        advance(command.ms);
        break;
      case 'switch': {
        const key = keys[command.object] as ObjectKey;
        const id = `sw_${key.resource}`;
        if (command.action === 'lift') {
          if (!switches.delete(id)) break;
        } else {
          switches.set(id, {
            id,
            scope: 'resource',
            tenant: tenantId,
            target: key.resource,
            action: command.action,
            reason: 'test',
            created_at: new Date(now()).toISOString(),
          });
          if (command.action !== 'drop') break;
          if (unfinished.has(key.resource)) droppedUnfinished.add(key.resource);
        }
        ringFresh(key);
        break;
      }
      case 'reconcile':
        point.arm(command.fault);
        await reconcile(reconciler).catch(() => undefined);
        point.arm(undefined);
        break;
    }
  }

  // Every switch lifted, as on-call would: its object rung.
  for (const s of switches.values()) ringFresh({ tenantId, resource: s.target as string });
  switches.clear();
  await quiesce({
    store,
    keys,
    step: config.stuckAfterMs + config.leaseMs + config.ingestGraceMs + 1,
    advance,
    reconcile: () => reconcile(reconciler),
    ringing: () => [...doorbells.values()].some((q) => q.length > 0),
    serve: (o) => turn(o, 0, false),
  });

  for (const key of keys) {
    const meta = await store.readMeta(key);
    expect(meta?.depth ?? 0, `depth of ${key.resource}`).toBe(0);
    expect(meta?.scheduled ?? false, `scheduled of ${key.resource}`).toBe(false);
    expect(meta?.switchDropped ?? 0, `drop count of ${key.resource} owing its marker`).toBe(0);
  }
  for (const event of delivered) expect(event.id.startsWith(`evt_${run}_`)).toBe(true);
  const seqOf = expectOneSeqPerEvent(delivered);
  const numberOf = (event: DeliveredEvent) => (event.data as { n: number }).n;
  // One event is distributed for what the producer meant to publish once: always for a key
  // sent again (it is answered with its first event's id), and without a key unless a
  // request that carried it died (README: a request answered 500, or events answered
  // internal, stored nothing, unless DynamoDB failed twice). And none that was not
  // answered stored, unless such a request died.
  const idOf = new Map<number, string>();
  for (const event of delivered) {
    const n = numberOf(event);
    const { keyed, died, stored } = meant[n] as Meant;
    const what = `${keyed ? 'keyed' : 'keyless'} event ${n} of ${event.resource}`;
    if (!died) expect(stored, `${what} distributed, but answered not stored`).toBe(true);
    const first = idOf.get(n) ?? event.id;
    if (keyed || !died) expect(event.id, `${what} distributed as two events`).toBe(first);
    idOf.set(n, first);
  }
  for (const resource of OBJECTS) {
    // A marker sent again (its holder died before the write that stands for it) has the same id.
    const dropped = [...new Map(markers.filter((m) => m.resource === resource).map((m) => [m.id, m.data.dropped])).values()].reduce(
      (sum, n) => sum + n,
      0,
    );
    const ofObject = delivered.filter((e) => e.resource === resource);
    const missing = [...accepted].filter(([id, r]) => r === resource && !seqOf.has(id));
    // Every accepted event is distributed, or counted in a gap marker: each seq stands for one or the other.
    expect(missing.length, `accepted events of ${resource} neither distributed nor counted`).toBeLessThanOrEqual(dropped);
    // Each seq given (the meta item's last) went to an event distributed, or one a marker counts. Where events
    // expire, a marker also counts events given no seq (expired before a chunk numbered them).
    const given = (await store.readMeta({ tenantId, resource }))?.seq ?? 0;
    const distinct = new Set(ofObject.map((e) => e.id)).size;
    // Exactly: unless a drop came after a turn of the object that failed, which may have sent
    // events on before its commit: the next turn cannot tell, and counts them too (README,
    // under the drop window: a marker may count too many, never too few).
    if (rig === week && !droppedUnfinished.has(resource))
      expect(distinct + dropped, `seqs of ${resource} distributed or counted`).toBe(given);
    if (!unfinishedOverDays.has(resource)) expect(given, `seqs of ${resource}`).toBeGreaterThanOrEqual(distinct);
    expect(given, `seqs of ${resource}`).toBeLessThanOrEqual(distinct + dropped);
    const bySeq = expectOneEventPerSeq(ofObject, ` of ${resource}`);
    if (dropped === 0) expect([...bySeq.keys()].sort((x, y) => x - y)).toEqual(Array.from({ length: bySeq.size }, (_, i) => i + 1));
    expectFirstSentInSeqOrder(ofObject);
    // Distributed in the order the producer meant them, its resends included (README: events
    // answered internal are withdrawn, so that sending them again in their order keeps it),
    // apart from those of a request that died.
    const numbers = [...new Set([...ofObject].sort((a, b) => a.seq - b.seq).map(numberOf))];
    const kept = numbers.filter((n) => !meant[n]?.died);
    expect(kept, `the events of ${resource}, by seq, in the order the producer meant them`).toEqual([...kept].sort((x, y) => x - y));
  }
}

/** CRASH_SEED and CRASH_PATH replay a failure (shrunk, then: it stops at the first failure otherwise). */
const HUNT = {
  numRuns: Number(process.env.CRASH_RUNS ?? 150),
  endOnFailure: process.env.CRASH_SEED === undefined,
  ...(process.env.CRASH_SEED !== undefined && { seed: Number(process.env.CRASH_SEED), path: process.env.CRASH_PATH }),
};

describe('queue protocol with a crash at any step (property-based, against dynalite)', () => {
  it('distributes every accepted event once per seq, in order, and leaves nothing stranded', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(commandArb, { minLength: 5, maxLength: 30 }), async (commands) => {
        await execute(commands, week);
      }),
      HUNT,
    );
  }, 300_000);

  it('with events outliving the retention period: each distributed, or counted in a gap marker', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(longCommandArb, { minLength: 5, maxLength: 30 }), async (commands) => {
        await execute(commands, twoDays);
      }),
      HUNT,
    );
  }, 300_000);
});
