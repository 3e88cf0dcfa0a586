/**
 * Counts every AWS API call the sandbox makes, by service and operation, with the
 * capacity DynamoDB would bill for it. The emulators do not report consumed
 * capacity, so it follows DynamoDB's size rules: a write is one WRU per started
 * KiB of the item, a strongly consistent read one RRU per started 4 KiB (half for
 * an eventually consistent one), and a refused conditional write still costs its
 * write. Commands are counted by their low-level names (the document client sends
 * PutItemCommand and so on, with the native input). Update items are billed on the item's size, which the request does not
 * show: sluice's meta and webhook items stay under 1 KiB, so an update is 1 WRU.
 */

export interface CallCounts {
  /** Calls by service, then operation. */
  readonly calls: Record<string, Record<string, number>>;
  /** DynamoDB calls by operation and what they touch (an index, or the kind of item by its key prefix). */
  readonly dynamoTargets: Record<string, number>;
  wru: number;
  rru: number;
  /** SQS requests, billed per 64 KiB chunk of payload. */
  sqsStandardRequests: number;
  sqsFifoRequests: number;
  /** Lambda invocations and their summed duration, by function. */
  readonly invocations: Record<string, { count: number; ms: number }>;
}

export function newCounts(): CallCounts {
  return { calls: {}, dynamoTargets: {}, wru: 0, rru: 0, sqsStandardRequests: 0, sqsFifoRequests: 0, invocations: {} };
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

function dynamoCapacity(counts: CallCounts, command: string, input: Input, output: Output): void {
  const consistent = input.ConsistentRead === true;
  // Reads: one RRU per started 4 KiB when strongly consistent, half of it otherwise.
  const read = (bytes: number) => units(bytes, 4096) * (consistent ? 1 : 0.5);
  switch (command) {
    case 'PutItemCommand':
      counts.wru += units(topLevel(input.Item), 1024);
      break;
    case 'UpdateItemCommand':
    case 'DeleteItemCommand':
      counts.wru += 1;
      break;
    case 'BatchWriteItemCommand':
      for (const requests of Object.values((input.RequestItems ?? {}) as Record<string, Array<Record<string, { Item?: unknown }>>>)) {
        for (const request of requests) counts.wru += request.PutRequest ? units(topLevel(request.PutRequest.Item), 1024) : 1;
      }
      break;
    case 'GetItemCommand':
      counts.rru += read(topLevel(output?.Item));
      break;
    case 'QueryCommand':
      // A query is billed on the summed size of the items it read, rounded up once.
      counts.rru += read(((output?.Items ?? []) as unknown[]).reduce((sum: number, item) => sum + topLevel(item), 0));
      break;
    case 'BatchGetItemCommand':
      for (const items of Object.values((output?.Responses ?? {}) as Record<string, unknown[]>)) {
        for (const item of items) counts.rru += read(topLevel(item));
      }
      break;
  }
}

function sqsRequests(counts: CallCounts, input: Input): void {
  const url = String(input.QueueUrl ?? '');
  const bodies = [input.MessageBody, ...((input.Entries as Array<{ MessageBody?: string }> | undefined) ?? []).map((e) => e.MessageBody)];
  const bytes = bodies.reduce((sum: number, b) => sum + (typeof b === 'string' ? Buffer.byteLength(b) : 0), 0);
  const requests = units(bytes, 64 * 1024);
  if (url.endsWith('.fifo')) counts.sqsFifoRequests += requests;
  else counts.sqsStandardRequests += requests;
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

/** Adds a counting middleware to an SDK client. */
export function instrument(counts: CallCounts, client: { middlewareStack: unknown }, service: string): void {
  const stack = client.middlewareStack as {
    add(middleware: unknown, options: { step: string; name: string }): void;
  };
  stack.add(
    (next: (args: { input: Input }) => Promise<{ output: Output }>, context: { commandName?: string }) =>
      async (args: { input: Input }) => {
        const command = context.commandName ?? 'unknown';
        counts.calls[service] ??= {};
        const byService = counts.calls[service];
        const started = performance.now();
        try {
          const result = await next(args);
          if (emulatorOnlyReceive(command, args.input, result.output, performance.now() - started)) {
            const key = `${command} (early empty, not billed)`;
            byService[key] = (byService[key] ?? 0) + 1;
            return result;
          }
          byService[command] = (byService[command] ?? 0) + 1;
          if (service === 'dynamodb') countTarget(counts, command, args.input);
          if (service === 'dynamodb') dynamoCapacity(counts, command, args.input, result.output);
          else sqsRequests(counts, args.input);
          return result;
        } catch (error) {
          byService[command] = (byService[command] ?? 0) + 1;
          if (service === 'dynamodb' && ['PutItemCommand', 'UpdateItemCommand', 'DeleteItemCommand'].includes(command)) counts.wru += 1;
          throw error;
        }
      },
    { step: 'initialize', name: 'sluiceBenchCounter' },
  );
}

export function recordInvocation(counts: CallCounts, fn: string, ms: number): void {
  counts.invocations[fn] ??= { count: 0, ms: 0 };
  const entry = counts.invocations[fn];
  entry.count += 1;
  entry.ms += ms;
}
