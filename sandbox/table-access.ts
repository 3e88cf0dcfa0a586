/**
 * IAM's part in the sandbox: a function's DynamoDB call that its role would refuse in
 * AWS (an action on a table, or a query of an index, not in functions/definitions/
 * tables.ts TABLE_ACCESS) is refused here too, with AccessDeniedException, so that a
 * grant the stack narrowed to what the code calls is tried by every test that runs the
 * code. The conditions that narrow some grants further (leading keys, attributes) are
 * the stack tests' business.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { FunctionName } from '../functions/definitions/alarms.ts';
import { TABLE_ACCESS, type TableAccess } from '../functions/definitions/tables.ts';

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
  const grants: Partial<Record<'events' | 'control', TableAccess>> = TABLE_ACCESS[fn];
  for (const name of names) {
    const table = name === tables.events ? 'events' : name === tables.control ? 'control' : undefined;
    const access = table && grants[table];
    const index = input.IndexName as string | undefined;
    const allowed =
      access !== undefined &&
      (index === undefined
        ? (access.actions as readonly string[]).includes(action)
        : action === 'Query' && access.indexes?.includes(index));
    if (!allowed) {
      return `the ${fn} function may not call dynamodb:${action} on the ${table ?? name} table${index ? ` (index ${index})` : ''}: see TABLE_ACCESS in functions/definitions/tables.ts`;
    }
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
