/**
 * Counts every AWS API call the sandbox makes, by service and operation, with the
 * capacity DynamoDB would bill for it. Commands are counted by their low-level
 * names (the document client sends PutItemCommand and so on, with the native input).
 *
 * Table capacity: each DynamoDB read and write asks for ReturnConsumedCapacity
 * (sandbox/observe.ts does, and takes the report off the answer again), and dynalite answers with DynamoDB's size rules applied to the item it stored: a
 * write is one WRU per started KiB of the larger of the old and the new item (so an
 * update or a delete pays for the item it changed, which the request does not
 * show), a strongly consistent read one RRU per started 4 KiB (half for an
 * eventually consistent one). An answer without a report falls back to the
 * same rules applied to what the request shows (an update or delete is then 1 WRU).
 * A refused conditional write still costs its write: 1 WRU, as the refusal does not
 * tell the item's size.
 *
 * Index capacity: dynalite reports none, so each write's cost on the global
 * secondary indexes (see `indexWrites`) is counted here, from the item's index keys
 * before and after the write. The request shows only the after, so the counts keep
 * a shadow of every indexed item's keys, learned from the writes that passed
 * through. It is true as long as every write to the tables goes through an
 * observed client and the tables started empty, as in the bench. Calls made on the
 * API's thread arrive here by message, a moment after they were answered; writes
 * to one item from both threads are ordered by the pipeline itself (an ingest's
 * write comes before the doorbell that starts the turn that writes next).
 */
import type { IndexDefinition, TableDefinition } from '../functions/definitions/tables.ts';
import { TABLES } from '../functions/definitions/tables.ts';
import { sandboxTableName } from '../sandbox/emulators.ts';
import { type ObservedCall, type ObservedService, observeCalls } from '../sandbox/observe.ts';

/** An item's values of its table's index key attributes; an absent attribute is left out. */
type IndexKeyValues = Readonly<Record<string, unknown>>;

export interface CallCounts {
  /** Calls by service, then operation. */
  readonly calls: Record<string, Record<string, number>>;
  /** DynamoDB calls by operation and what they touch (an index, or the kind of item by its key prefix). */
  readonly dynamoTargets: Record<string, number>;
  /** Table and index writes. */
  wru: number;
  rru: number;
  /** The index writes by index name (included in `wru`). */
  readonly indexWru: Record<string, number>;
  /** The index keys each indexed item has now, by table and key: what a write moves it from. */
  readonly indexShadow: Map<string, IndexKeyValues>;
  /** SQS requests, billed per 64 KiB chunk of payload (sent, or received). */
  sqsStandardRequests: number;
  sqsFifoRequests: number;
  /** SNS publishes, billed per 64 KiB chunk of payload. */
  snsRequests: number;
  /** Lambda invocations and their summed billed duration (each rounded up to the millisecond), by function. */
  readonly invocations: Record<string, { count: number; ms: number }>;
}

export function newCounts(): CallCounts {
  return {
    calls: {},
    dynamoTargets: {},
    wru: 0,
    rru: 0,
    indexWru: {},
    indexShadow: new Map(),
    sqsStandardRequests: 0,
    sqsFifoRequests: 0,
    snsRequests: 0,
    invocations: {},
  };
}

/** What was counted since `before` (a copy taken earlier with `snapshotCounts`): a window of a run. */
export function countsSince(now: CallCounts, before: CallCounts): CallCounts {
  const minus = (a: Record<string, number>, b: Record<string, number> = {}) =>
    Object.fromEntries(
      Object.entries(a)
        .map(([k, n]) => [k, n - (b[k] ?? 0)])
        .filter(([, n]) => n !== 0),
    );
  return {
    calls: Object.fromEntries(Object.entries(now.calls).map(([service, ops]) => [service, minus(ops, before.calls[service])])),
    dynamoTargets: minus(now.dynamoTargets, before.dynamoTargets),
    wru: now.wru - before.wru,
    rru: now.rru - before.rru,
    indexWru: minus(now.indexWru, before.indexWru),
    indexShadow: now.indexShadow,
    sqsStandardRequests: now.sqsStandardRequests - before.sqsStandardRequests,
    sqsFifoRequests: now.sqsFifoRequests - before.sqsFifoRequests,
    snsRequests: now.snsRequests - before.snsRequests,
    invocations: Object.fromEntries(
      Object.entries(now.invocations).map(([fn, i]) => [
        fn,
        { count: i.count - (before.invocations[fn]?.count ?? 0), ms: i.ms - (before.invocations[fn]?.ms ?? 0) },
      ]),
    ),
  };
}

/** A copy of the counts as they are now (without the index shadow, which only the live counts need). */
export function snapshotCounts(counts: CallCounts): CallCounts {
  return { ...structuredClone({ ...counts, indexShadow: undefined }), indexShadow: new Map() } as CallCounts;
}

/**
 * An item's size as DynamoDB bills it: attribute names plus values (strings and
 * binaries by their bytes, numbers about one byte per two digits, lists and maps
 * three bytes plus a byte per element). The SDK's input here is the native value,
 * before marshalling.
 */
export function itemSize(value: unknown): number {
  if (value === null || value === undefined || typeof value === 'boolean') return 1;
  if (typeof value === 'string') return Buffer.byteLength(value);
  if (typeof value === 'number' || typeof value === 'bigint') return Math.ceil(String(value).replace(/[-.]/g, '').length / 2) + 1;
  if (value instanceof Uint8Array) return value.byteLength;
  if (value instanceof Set) return [...value].reduce((sum: number, v) => sum + itemSize(v), 0);
  if (Array.isArray(value)) return 3 + value.reduce((sum: number, v) => sum + 1 + itemSize(v), 0);
  return 3 + Object.entries(value as Record<string, unknown>).reduce((sum, [k, v]) => sum + 1 + Buffer.byteLength(k) + itemSize(v), 0);
}

/** An item's size without the map overhead a top-level item does not pay. */
const topLevel = (item: unknown) => (item && typeof item === 'object' ? Math.max(1, itemSize(item) - 3 - Object.keys(item).length) : 0);
const units = (bytes: number, unit: number) => Math.max(1, Math.ceil(bytes / unit));

type Input = Record<string, unknown>;
type Output = Record<string, unknown> | undefined;
type Item = Record<string, unknown>;

/** The sandbox's tables by the physical name requests use. */
const TABLES_BY_NAME = new Map<string, TableDefinition>(TABLES.map((table) => [sandboxTableName(table), table]));

/** Each table's index key attributes, worked out once. */
const INDEX_KEYS = new Map<TableDefinition, ReadonlySet<string>>(
  TABLES.map((table) => [table, new Set(table.indexes.flatMap((index) => [index.partitionKey.name, index.sortKey.name]))]),
);
const indexKeyAttributes = (table: TableDefinition): ReadonlySet<string> => INDEX_KEYS.get(table) ?? new Set();

function indexKeyValues(table: TableDefinition, item: Item): IndexKeyValues {
  return Object.fromEntries([...indexKeyAttributes(table)].flatMap((name) => (item[name] === undefined ? [] : [[name, item[name]]])));
}

const shadowId = (table: TableDefinition, key: Item) =>
  JSON.stringify([table.logicalName, key[table.partitionKey.name], key[table.sortKey.name]]);

/**
 * How many writes an item's write makes on an index (AWS, "GSI.Writes"). An item is
 * in an index only while it has both of its key attributes (a sparse index leaves
 * the others out). Entering costs a put, leaving a delete, a new index key a delete
 * and a put. Staying under the same key costs nothing on a KEYS_ONLY index, whose
 * entry holds only keys that did not change, and one write on an INCLUDE one when
 * the write sets or removes one of the attributes it holds (`projectedTouched`).
 */
function indexWrites(index: IndexDefinition, before: IndexKeyValues, after: IndexKeyValues | undefined, projectedTouched: boolean): number {
  const entry = (values: IndexKeyValues | undefined) => {
    const pk = values?.[index.partitionKey.name];
    const sk = values?.[index.sortKey.name];
    return pk === undefined || sk === undefined ? undefined : [pk, sk];
  };
  const old = entry(before);
  const now = entry(after);
  if (!old && !now) return 0;
  if (!old || !now) return 1;
  if (!Object.is(old[0], now[0]) || !Object.is(old[1], now[1])) return 2;
  return index.projection !== 'KEYS_ONLY' && projectedTouched ? 1 : 0;
}

/** Whether a write sets or removes one of the attributes an INCLUDE index holds besides its keys. */
function touchesProjected(index: IndexDefinition, write: ItemWrite): boolean {
  if (index.projection === 'KEYS_ONLY' || write === 'delete') return false;
  const included = new Set(index.projection.include);
  if ('put' in write) return Object.keys(write.put).some((name) => included.has(name));
  const names = (write.update.ExpressionAttributeNames ?? {}) as Record<string, string>;
  return updateActions(String(write.update.UpdateExpression ?? '')).some(({ root }) => included.has(names[root] ?? root));
}

/** A value an update gives an index key attribute in a way not followed here: equal to no other value, so a change. */
const unknownValue = () => Symbol('changed by the update');

const IF_NOT_EXISTS = /^if_not_exists\s*\(\s*([^,]+?)\s*,\s*(:\w+)\s*\)$/;
/** A clause keyword, not part of a name (`#set`), a value (`:add`) or a path (`a.delete`). */
const CLAUSE = /(?<![\w#:.])(SET|REMOVE|ADD|DELETE)(?!\w)/gi;

/** A path's first name as the expression writes it (`#a` of `#a.b[0]`), and whether the path is that name alone. */
function pathRoot(path: string): { root: string; whole: boolean } {
  const root = path.split(/[.[]/, 1)[0]?.trim() ?? '';
  return { root, whole: root === path.trim() };
}

/**
 * One action of an UpdateExpression, parsed: its clause, the root of the path it writes,
 * and for a SET what it assigns: a value (`:v`) or `if_not_exists(path, :v)`.
 */
interface UpdateAction {
  readonly clause: string;
  readonly root: string;
  readonly whole: boolean;
  readonly value?: string;
  readonly ifNotExists?: { readonly root: string; readonly whole: boolean; readonly value: string };
}

/** The path an UpdateExpression's action writes: left of a SET's `=`, a REMOVE's whole, an ADD's or DELETE's first word. */
function actionPath(clause: string, action: string): string {
  if (clause === 'SET') return action.slice(0, action.indexOf('='));
  return clause === 'REMOVE' ? action : (action.split(/\s+/)[0] ?? '');
}

function parseAction(clause: string, action: string): UpdateAction {
  const { root, whole } = pathRoot(actionPath(clause, action));
  if (clause !== 'SET' || !whole) return { clause, root, whole };
  const operand = action.slice(action.indexOf('=') + 1).trim();
  if (/^:\w+$/.test(operand)) return { clause, root, whole, value: operand };
  const guarded = IF_NOT_EXISTS.exec(operand);
  return guarded
    ? { clause, root, whole, ifNotExists: { ...pathRoot(guarded[1] ?? ''), value: guarded[2] ?? '' } }
    : { clause, root, whole };
}

/**
 * The actions of each UpdateExpression, parsed once: the pipeline sends a few dozen
 * expressions, each thousands of times, and parsing one every time cost the
 * accounting most of its time per call.
 */
const parsedUpdates = new Map<string, readonly UpdateAction[]>();
const PARSED_UPDATES_KEPT = 1_000;

/** The actions of an UpdateExpression, each with its clause: `SET #a = :v, #b = if_not_exists(#b, :w)` gives two SETs. */
function updateActions(expression: string): readonly UpdateAction[] {
  let actions = parsedUpdates.get(expression);
  if (actions) return actions;
  const marks = [...expression.matchAll(CLAUSE)];
  actions = marks.flatMap((mark, i) => {
    const body = expression.slice(mark.index + mark[0].length, marks[i + 1]?.index);
    return splitTopLevel(body).map((action) => parseAction(mark[0].toUpperCase(), action));
  });
  if (parsedUpdates.size >= PARSED_UPDATES_KEPT) parsedUpdates.clear();
  parsedUpdates.set(expression, actions);
  return actions;
}

/** Splits on the commas outside parentheses (a function's arguments stay together). */
function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '(') depth++;
    else if (text[i] === ')') depth--;
    else if (text[i] === ',' && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts.map((part) => part.trim()).filter((part) => part !== '');
}

/**
 * The index key values an update leaves. Followed: `SET #a = :v`, `SET #a =
 * if_not_exists(#a, :v)` (read against the item before the update, as DynamoDB
 * does) and `REMOVE #a`. Any other assignment of an index key attribute (arithmetic,
 * another path, ADD, DELETE, a nested path) is a change to a value not known.
 * Attributes the expression does not name keep their value.
 */
function keysAfterUpdate(table: TableDefinition, before: IndexKeyValues, input: Input): IndexKeyValues {
  const indexed = indexKeyAttributes(table);
  const names = (input.ExpressionAttributeNames ?? {}) as Record<string, string>;
  const values = (input.ExpressionAttributeValues ?? {}) as Record<string, unknown>;
  const after: Record<string, unknown> = { ...before };
  for (const action of updateActions(String(input.UpdateExpression ?? ''))) {
    const name = names[action.root] ?? action.root;
    if (!indexed.has(name)) continue;
    const guard = action.ifNotExists;
    if (action.clause === 'REMOVE' && action.whole) {
      delete after[name];
    } else if (action.value !== undefined) {
      after[name] = values[action.value];
    } else if (guard?.whole && (names[guard.root] ?? guard.root) === name) {
      after[name] = before[name] ?? values[guard.value];
    } else {
      after[name] = unknownValue();
    }
  }
  return after;
}

/** What a write does to one item: a put of `item`, an update by its input, or a delete. */
type ItemWrite = { readonly put: Item } | { readonly update: Input } | 'delete';

/**
 * Counts what one item's successful write costs on its table's indexes, and moves the
 * item's shadow to its new keys. An entry is a few keys and, in an INCLUDE index, a
 * few short attributes: 1 WRU a write.
 */
function countIndexWrites(counts: CallCounts, tableName: unknown, key: Item, write: ItemWrite): void {
  const table = TABLES_BY_NAME.get(String(tableName));
  if (!table || table.indexes.length === 0) return;
  const id = shadowId(table, key);
  const before = counts.indexShadow.get(id) ?? {};
  const after =
    write === 'delete' ? undefined : 'put' in write ? indexKeyValues(table, write.put) : keysAfterUpdate(table, before, write.update);
  for (const index of table.indexes) {
    const wru = indexWrites(index, before, after, touchesProjected(index, write));
    if (wru === 0) continue;
    counts.wru += wru;
    counts.indexWru[index.indexName] = (counts.indexWru[index.indexName] ?? 0) + wru;
  }
  // Only items with an index key are kept: an absent one has none.
  if (after && Object.keys(after).length > 0) counts.indexShadow.set(id, after);
  else counts.indexShadow.delete(id);
}

/** The table capacity an answer reports (summed over a batch's tables), if it carries a report. */
function reportedUnits(output: Output): number | undefined {
  const consumed = output?.ConsumedCapacity as { CapacityUnits?: number } | Array<{ CapacityUnits?: number }> | undefined;
  if (consumed === undefined) return undefined;
  return [consumed].flat().reduce((sum, c) => sum + (c.CapacityUnits ?? 0), 0);
}

type WriteRequest = { PutRequest?: { Item: Item }; DeleteRequest?: { Key: Item } };

function dynamoCapacity(counts: CallCounts, command: string, input: Input, output: Output): void {
  const consistent = input.ConsistentRead === true;
  // Reads: one RRU per started 4 KiB when strongly consistent, half of it otherwise.
  const read = (bytes: number) => units(bytes, 4096) * (consistent ? 1 : 0.5);
  const reported = reportedUnits(output);
  switch (command) {
    case 'PutItemCommand': {
      const wru = reported ?? units(topLevel(input.Item), 1024);
      counts.wru += wru;
      countIndexWrites(counts, input.TableName, input.Item as Item, { put: input.Item as Item });
      break;
    }
    case 'UpdateItemCommand':
    case 'DeleteItemCommand': {
      // Without a report the item's size is not known: 1 WRU, right for an item under 1 KiB.
      const wru = reported ?? 1;
      counts.wru += wru;
      countIndexWrites(counts, input.TableName, input.Key as Item, command === 'DeleteItemCommand' ? 'delete' : { update: input });
      break;
    }
    case 'BatchWriteItemCommand': {
      const unprocessed = (output?.UnprocessedItems ?? {}) as Record<string, WriteRequest[]>;
      let sized = 0;
      for (const [tableName, requests] of Object.entries((input.RequestItems ?? {}) as Record<string, WriteRequest[]>)) {
        // A request DynamoDB left unprocessed is not written (the caller sends it again).
        const table = TABLES_BY_NAME.get(tableName);
        const keyOf = (request: WriteRequest) => {
          const item = request.PutRequest?.Item ?? request.DeleteRequest?.Key ?? {};
          return JSON.stringify([item[table?.partitionKey.name ?? 'pk'], item[table?.sortKey.name ?? 'sk']]);
        };
        const left = new Set((unprocessed[tableName] ?? []).map(keyOf));
        for (const request of requests) {
          if (left.has(keyOf(request))) continue;
          const item = request.PutRequest?.Item;
          // The report is per table, not per item: a deleted item's size is not known.
          const wru = item ? units(topLevel(item), 1024) : 1;
          sized += wru;
          countIndexWrites(counts, tableName, item ?? request.DeleteRequest?.Key ?? {}, item ? { put: item } : 'delete');
        }
      }
      counts.wru += reported ?? sized;
      break;
    }
    case 'GetItemCommand':
      counts.rru += reported ?? read(topLevel(output?.Item));
      break;
    case 'QueryCommand': {
      // A query is billed on the summed size of the items it read, rounded up once, and
      // at least one unit: dynalite reports 0 for a query that reads nothing.
      const bytes = ((output?.Items ?? []) as unknown[]).reduce((sum: number, item) => sum + topLevel(item), 0);
      counts.rru += Math.max(read(0), reported ?? read(bytes));
      break;
    }
    case 'BatchGetItemCommand': {
      let sized = 0;
      for (const items of Object.values((output?.Responses ?? {}) as Record<string, unknown[]>)) {
        for (const item of items) sized += read(topLevel(item));
      }
      counts.rru += reported ?? sized;
      break;
    }
  }
}

/**
 * An SQS request: one per started 64 KiB of its payload, the messages it sends or,
 * for a receive, those it returns (a delivery carries its events, so ten of them can
 * be several chunks); a request without a payload is one.
 */
function sqsRequests(counts: CallCounts, input: Input, output: Output): void {
  const url = String(input.QueueUrl ?? '');
  const received = ((output?.Messages as Array<{ Body?: string }> | undefined) ?? []).map((m) => m.Body);
  const sent = [input.MessageBody, ...((input.Entries as Array<{ MessageBody?: string }> | undefined) ?? []).map((e) => e.MessageBody)];
  const bodies = [...sent, ...received];
  const bytes = bodies.reduce((sum: number, b) => sum + (typeof b === 'string' ? Buffer.byteLength(b) : 0), 0);
  const requests = units(bytes, 64 * 1024);
  if (url.endsWith('.fifo')) counts.sqsFifoRequests += requests;
  else counts.sqsStandardRequests += requests;
}

/** An SNS publish: one request per started 64 KiB of its message (SNS's chunks, like SQS's). */
function snsRequests(counts: CallCounts, input: Input): void {
  counts.snsRequests += units(typeof input.Message === 'string' ? Buffer.byteLength(input.Message) : 0, 64 * 1024);
}

/** `UpdateItemCommand meta`, `QueryCommand index by_resource`: which items a call is for. */
function countTarget(counts: CallCounts, command: string, input: Input): void {
  const key = (input.Key ?? input.Item ?? {}) as Record<string, unknown>;
  const values = (input.ExpressionAttributeValues ?? {}) as Record<string, unknown>;
  const pk = String(key.pk ?? values[':pk'] ?? '');
  const sk = String(key.sk ?? '');
  const target = input.IndexName
    ? `index ${String(input.IndexName)}`
    : input.RequestItems
      ? 'batch'
      : `${pk.split('#')[0] || '?'}${sk && !sk.includes('#') && sk.length < 12 ? `/${sk}` : ''}`;
  const name = `${command.replace('Command', '')} ${target}`;
  counts.dynamoTargets[name] = (counts.dynamoTargets[name] ?? 0) + 1;
}

/**
 * Whether AWS would have answered this receive as it was answered. fauxqs wakes
 * every waiting long poll when a message arrives and all but one come back empty
 * at once; SQS returns an empty long poll only when its wait time is up. Such an
 * early empty answer is counted apart and not billed.
 */
function emulatorOnlyReceive(command: string, input: Input, output: Output, elapsedMs: number): boolean {
  if (command !== 'ReceiveMessageCommand') return false;
  const waitMs = Number(input.WaitTimeSeconds ?? 0) * 1000;
  const empty = ((output?.Messages as unknown[] | undefined) ?? []).length === 0;
  return empty && waitMs > 0 && elapsedMs < waitMs - 1000;
}

/** A conditional write DynamoDB refused: billed as a write, though nothing was written. */
const refusedWrite = (call: ObservedCall) =>
  ['PutItemCommand', 'UpdateItemCommand', 'DeleteItemCommand'].includes(call.command) &&
  call.errorName === 'ConditionalCheckFailedException';

/** Counts one call, as `observeCalls` saw it. */
export function account(counts: CallCounts, call: ObservedCall): void {
  const { service, command, input, output } = call;
  counts.calls[service] ??= {};
  const byService = counts.calls[service];
  if (call.errorName !== undefined) {
    byService[command] = (byService[command] ?? 0) + 1;
    // A refused write changed no item, so no index and no shadow.
    if (service === 'dynamodb' && refusedWrite(call)) counts.wru += 1;
    return;
  }
  if (emulatorOnlyReceive(command, input, output, call.elapsedMs)) {
    const key = `${command} (early empty, not billed)`;
    byService[key] = (byService[key] ?? 0) + 1;
    return;
  }
  byService[command] = (byService[command] ?? 0) + 1;
  if (service === 'dynamodb') {
    countTarget(counts, command, input);
    dynamoCapacity(counts, command, input, output);
  } else if (service === 'sns') snsRequests(counts, input);
  else sqsRequests(counts, input, output);
}

/** Counts every call an SDK client makes. */
export function instrument(counts: CallCounts, client: { middlewareStack: unknown }, service: ObservedService): void {
  observeCalls(client, service, (call) => account(counts, call));
}

/** Counts an invocation of `fn` that took `ms`: Lambda bills its duration rounded up to the millisecond. */
export function recordInvocation(counts: CallCounts, fn: string, ms: number): void {
  counts.invocations[fn] ??= { count: 0, ms: 0 };
  const entry = counts.invocations[fn];
  entry.count += 1;
  entry.ms += Math.ceil(ms);
}
