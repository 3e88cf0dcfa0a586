/**
 * IAM's part in the sandbox: a function's DynamoDB call that its role would refuse in
 * AWS (an action on a table, or a query of an index, not in functions/definitions/
 * tables.ts TABLE_ACCESS) is refused here too, with AccessDeniedException, so that a
 * grant the stack narrowed to what the code calls is tried by every test that runs the
 * code. So is a grant's `leadingKeys` (IAM's `dynamodb:LeadingKeys`): a call on an item
 * whose partition key matches none of them is refused; and its `attributes` (IAM's
 * `dynamodb:Attributes`, with `dynamodb:Select` SPECIFIC_ATTRIBUTES): a read that does
 * not name what it wants in a projection, or names another attribute, and a write that
 * names another, are refused. A code change that reads a webhook's secret in the
 * distributor, say, then fails the tests, not the deployed function.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { FunctionName } from '../functions/definitions/alarms.ts';
import { CONTROL_PK, grantsOf, TABLE_ACCESS, TABLES, type TableAccess, type TableGrant } from '../functions/definitions/tables.ts';

const running = new AsyncLocalStorage<FunctionName>();

/** Runs `run` as the function `fn`: its DynamoDB calls, awaited or not, are that function's. */
export function runningAs<T>(fn: FunctionName, run: () => T): T {
  return running.run(fn, run);
}

/** The function whose code is running (undefined outside any). */
export function currentFunction(): FunctionName | undefined {
  return running.getStore();
}

/** A handler whose every invocation runs as the function `fn`. */
export function asFunction<A extends unknown[], R>(fn: FunctionName, handler: (...args: A) => R): (...args: A) => R {
  return (...args) => runningAs(fn, () => handler(...args));
}

/** Each leading-key pattern as a RegExp, made once: every DynamoDB call of a function whose grant names them is checked. */
const likePatterns = new Map<string, RegExp>();

/** IAM's StringLike: `*` matches any characters. */
function like(value: string, pattern: string): boolean {
  let compiled = likePatterns.get(pattern);
  if (!compiled) {
    const escaped = pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*');
    compiled = new RegExp(`^${escaped}$`);
    likePatterns.set(pattern, compiled);
  }
  return compiled.test(value);
}

type Item = Record<string, unknown> | undefined;

/**
 * The partition keys a call reaches on one table (IAM's `dynamodb:LeadingKeys`), as
 * strings; an entry that is not a string is one the call does not name (a query whose
 * key condition cannot be read), which no leading key allows.
 */
function leadingKeys(action: string, input: Record<string, unknown>, table: string, partitionKey: string): unknown[] {
  const batch = (input.RequestItems as Record<string, unknown> | undefined)?.[table];
  switch (action) {
    case 'GetItem':
    case 'DeleteItem':
    case 'UpdateItem':
      return [(input.Key as Item)?.[partitionKey]];
    case 'PutItem':
      return [(input.Item as Item)?.[partitionKey]];
    case 'BatchGetItem':
      return ((batch as { Keys?: Item[] } | undefined)?.Keys ?? []).map((key) => key?.[partitionKey]);
    case 'BatchWriteItem':
      return ((batch as Array<{ PutRequest?: { Item?: Item }; DeleteRequest?: { Key?: Item } }> | undefined) ?? []).map(
        (request) => (request.PutRequest?.Item ?? request.DeleteRequest?.Key)?.[partitionKey],
      );
    case 'Query': {
      const names = (input.ExpressionAttributeNames as Record<string, string> | undefined) ?? {};
      const values = (input.ExpressionAttributeValues as Record<string, unknown> | undefined) ?? {};
      for (const [, name, value] of String(input.KeyConditionExpression ?? '').matchAll(/([#\w]+)\s*=\s*(:\w+)/g)) {
        if ((names[name as string] ?? name) === partitionKey) return [values[value as string]];
      }
      return [undefined];
    }
    default:
      return [undefined];
  }
}

/**
 * What the sandbox grants beyond TABLE_ACCESS: the canary's tenant key, which AWS keeps
 * in a Secrets Manager secret of the canary's own, is an item here (adapters/canary-key.ts).
 */
const SANDBOX_ONLY_LEADING_KEYS: Partial<Record<FunctionName, readonly string[]>> = { canary: [CONTROL_PK.canaryKey] };

const READS = new Set(['GetItem', 'BatchGetItem', 'Query', 'Scan']);

/** The top-level attribute names a list of paths names (`#a.b, c[0]` names a's and c). */
function pathRoots(paths: string, names: Record<string, string>): string[] {
  return paths
    .split(',')
    .map((path) => path.trim().split(/[.[]/, 1)[0]?.trim() ?? '')
    .filter((root) => root !== '')
    .map((root) => names[root] ?? root);
}

/**
 * Why a grant of only `allowed` attributes refuses the call on `table`, or undefined.
 * A read must name its attributes (a projection; without one it asks for all of them);
 * a write may name, in its item, key or expressions, only those.
 */
function attributeRefusal(action: string, input: Record<string, unknown>, table: string, allowed: readonly string[]): string | undefined {
  const names = (input.ExpressionAttributeNames as Record<string, string> | undefined) ?? {};
  let named: string[];
  if (READS.has(action)) {
    const request = action === 'BatchGetItem' ? ((input.RequestItems as Record<string, Record<string, unknown>>)[table] ?? {}) : input;
    const requestNames = (request.ExpressionAttributeNames as Record<string, string> | undefined) ?? names;
    const projection = request.ProjectionExpression as string | undefined;
    const select = request.Select as string | undefined;
    if (projection === undefined || (select !== undefined && select !== 'SPECIFIC_ATTRIBUTES')) return 'reads every attribute';
    named = pathRoots(projection, requestNames);
  } else {
    const item = (input.Item ?? input.Key ?? {}) as Record<string, unknown>;
    const batch =
      action === 'BatchWriteItem'
        ? ((input.RequestItems as Record<string, Array<Record<string, { Item?: object; Key?: object }>>>)[table] ?? [])
        : [];
    named = [
      ...Object.keys(item),
      ...batch.flatMap((request) => Object.keys(request.PutRequest?.Item ?? request.DeleteRequest?.Key ?? {})),
      ...Object.values(names),
    ];
  }
  const other = named.find((name) => !allowed.includes(name));
  return other === undefined ? undefined : `names the attribute ${other}`;
}

/** Why the role of `fn` refuses the call, or undefined when it allows it. */
export function refusal(
  fn: FunctionName,
  tables: { events: string; control: string },
  command: string,
  input: Record<string, unknown>,
): string | undefined {
  const action = command.replace(/Command$/, '');
  const requestItems = input.RequestItems as Record<string, unknown> | undefined;
  const names = requestItems ? Object.keys(requestItems) : [String(input.TableName)];
  const grants: Partial<Record<'events' | 'control', TableGrant>> = TABLE_ACCESS[fn];
  for (const name of names) {
    const table = name === tables.events ? 'events' : name === tables.control ? 'control' : undefined;
    const given = table && grants[table];
    const index = input.IndexName as string | undefined;
    if (!table || given === undefined) return notCalled(fn, action, table ?? name, index);
    // Allowed when one grant allows the whole call (as one IAM statement must); refused
    // with the reason of the grant that came nearest (it allows the action, if one does).
    const reasons = grantsOf(given).map((access) => grantRefusal(fn, table, name, access, action, index, input));
    if (reasons.includes(undefined)) continue;
    return reasons.find((reason) => reason !== notCalled(fn, action, table, index)) ?? reasons[0];
  }
  return undefined;
}

function notCalled(fn: FunctionName, action: string, table: string, index: string | undefined): string {
  return `the ${fn} function may not call dynamodb:${action} on the ${table} table${index ? ` (index ${index})` : ''}: see TABLE_ACCESS in functions/definitions/tables.ts`;
}

/** Why one grant does not allow the call, or undefined when it does. */
function grantRefusal(
  fn: FunctionName,
  table: 'events' | 'control',
  name: string,
  access: TableAccess,
  action: string,
  index: string | undefined,
  input: Record<string, unknown>,
): string | undefined {
  const allowed =
    index === undefined ? (access.actions as readonly string[]).includes(action) : action === 'Query' && access.indexes?.includes(index);
  if (!allowed) return notCalled(fn, action, table, index);
  if (access.leadingKeys) {
    const definition = TABLES.find((t) => t.logicalName.toLowerCase() === table);
    const partitionKey =
      (index === undefined ? definition?.partitionKey : definition?.indexes.find((i) => i.indexName === index)?.partitionKey)?.name ?? 'pk';
    const patterns = [...access.leadingKeys, ...(SANDBOX_ONLY_LEADING_KEYS[fn] ?? [])];
    const keys = leadingKeys(action, input, name, partitionKey);
    const outside = keys.findIndex((key) => typeof key !== 'string' || !patterns.some((pattern) => like(key, pattern)));
    if (outside >= 0) {
      const key = keys[outside];
      const which = typeof key === 'string' ? key : '(one it does not name)';
      return `the ${fn} function may not reach the partition ${which} of the ${table} table: see TABLE_ACCESS in functions/definitions/tables.ts`;
    }
  }
  const attributes = access.attributes && attributeRefusal(action, input, name, access.attributes);
  if (attributes) {
    return `the ${fn} function may read or write only some attributes of the ${table} table, and this dynamodb:${action} ${attributes}: see TABLE_ACCESS in functions/definitions/tables.ts`;
  }
  return undefined;
}

/**
 * Refuses what each function's role would refuse, on a client its functions share:
 * the function is the one `current` names (calls made outside any are not checked).
 */
export function enforceTableAccess(
  client: { middlewareStack: unknown },
  tables: { events: string; control: string },
  current: () => FunctionName | undefined = () => running.getStore(),
): void {
  const stack = client.middlewareStack as { add(middleware: unknown, options: { step: string; name: string }): void };
  stack.add(
    (next: (args: { input: Record<string, unknown> }) => Promise<unknown>, context: { commandName?: string }) =>
      async (args: { input: Record<string, unknown> }) => {
        const fn = current();
        const refused = fn && refusal(fn, tables, context.commandName ?? 'unknown', args.input);
        if (refused) throw Object.assign(new Error(refused), { name: 'AccessDeniedException' });
        return next(args);
      },
    { step: 'initialize', name: 'sluiceTableAccess' },
  );
}
