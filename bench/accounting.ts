/**
 * Counts every AWS API call the sandbox makes, by service and operation, with the
 * capacity DynamoDB would bill for it. The emulators do not report consumed
 * capacity, so it follows DynamoDB's size rules: a write is one WRU per started
 * KiB of the item, a strongly consistent read one RRU per started 4 KiB (half for
 * an eventually consistent one), and a refused conditional write still costs its
 * write. Update items are billed on the item's size, which the request does not
 * show: sluice's meta and webhook items stay under 1 KiB, so an update is 1 WRU.
 */

export interface CallCounts {
  /** Calls by service, then operation. */
  readonly calls: Record<string, Record<string, number>>;
  wru: number;
  rru: number;
  /** SQS requests, billed per 64 KiB chunk of payload. */
  sqsStandardRequests: number;
  sqsFifoRequests: number;
  /** Lambda invocations and their summed duration, by function. */
  readonly invocations: Record<string, { count: number; ms: number }>;
}

export function newCounts(): CallCounts {
  return { calls: {}, wru: 0, rru: 0, sqsStandardRequests: 0, sqsFifoRequests: 0, invocations: {} };
}

const size = (value: unknown) => Buffer.byteLength(JSON.stringify(value ?? {}));
const kib = (bytes: number, unit: number) => Math.max(1, Math.ceil(bytes / unit));

type Input = Record<string, unknown>;
type Output = Record<string, unknown> | undefined;

function dynamoCapacity(counts: CallCounts, command: string, input: Input, output: Output): void {
  const consistent = input.ConsistentRead === true;
  const read = (bytes: number) => kib(bytes, 4096) * (consistent ? 1 : 0.5);
  switch (command) {
    case 'PutCommand':
      counts.wru += kib(size(input.Item), 1024);
      break;
    case 'UpdateCommand':
    case 'DeleteCommand':
      counts.wru += 1;
      break;
    case 'BatchWriteCommand':
      for (const requests of Object.values((input.RequestItems ?? {}) as Record<string, Array<Record<string, { Item?: unknown }>>>)) {
        for (const request of requests) counts.wru += request.PutRequest ? kib(size(request.PutRequest.Item), 1024) : 1;
      }
      break;
    case 'GetCommand':
      counts.rru += read(size(output?.Item));
      break;
    case 'QueryCommand':
      counts.rru += read(size(output?.Items));
      break;
    case 'BatchGetCommand':
      for (const items of Object.values((output?.Responses ?? {}) as Record<string, unknown[]>)) {
        for (const item of items) counts.rru += kib(size(item), 4096);
      }
      break;
  }
}

function sqsRequests(counts: CallCounts, input: Input): void {
  const url = String(input.QueueUrl ?? '');
  const bodies = [input.MessageBody, ...((input.Entries as Array<{ MessageBody?: string }> | undefined) ?? []).map((e) => e.MessageBody)];
  const bytes = bodies.reduce((sum: number, b) => sum + (typeof b === 'string' ? Buffer.byteLength(b) : 0), 0);
  const requests = kib(bytes, 64 * 1024);
  if (url.endsWith('.fifo')) counts.sqsFifoRequests += requests;
  else counts.sqsStandardRequests += requests;
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
        const byService = (counts.calls[service] ??= {});
        byService[command] = (byService[command] ?? 0) + 1;
        try {
          const result = await next(args);
          if (service === 'dynamodb') dynamoCapacity(counts, command, args.input, result.output);
          else sqsRequests(counts, args.input);
          return result;
        } catch (error) {
          if (service === 'dynamodb' && ['PutCommand', 'UpdateCommand', 'DeleteCommand'].includes(command)) counts.wru += 1;
          throw error;
        }
      },
    { step: 'initialize', name: 'sluiceBenchCounter' },
  );
}

export function recordInvocation(counts: CallCounts, fn: string, ms: number): void {
  const entry = (counts.invocations[fn] ??= { count: 0, ms: 0 });
  entry.count += 1;
  entry.ms += ms;
}
