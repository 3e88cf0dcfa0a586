/**
 * Watching the sandbox's AWS calls (the benchmark's accounting, and tests that count
 * lookups). A middleware hands each call, as it was made and answered, to a
 * callback. DynamoDB calls that can report the capacity they consumed are asked for
 * the report on a copy of the input, and the report is taken off the answer again,
 * so the application sees what it asked for.
 *
 * A call is plain data, so a call made on the API's thread can be posted to the
 * thread that counts (see api-thread.ts).
 */

export type ObservedService = 'dynamodb' | 'sqs' | 'sns';

export interface ObservedCall {
  readonly service: ObservedService;
  /** The low-level command name: the document client sends PutItemCommand and so on, with the native input. */
  readonly command: string;
  readonly input: Record<string, unknown>;
  /** The answer, when there was one; with the capacity report. */
  readonly output?: Record<string, unknown>;
  /** The error's name, when the call failed. */
  readonly errorName?: string;
  readonly elapsedMs: number;
}

export type CallObserver = (call: ObservedCall) => void;

/** The DynamoDB calls that can report the capacity they consumed. */
const CAPACITY_REPORTING = new Set([
  'PutItemCommand',
  'UpdateItemCommand',
  'DeleteItemCommand',
  'BatchWriteItemCommand',
  'GetItemCommand',
  'QueryCommand',
  'BatchGetItemCommand',
]);

type Input = Record<string, unknown>;
type Output = Record<string, unknown> | undefined;

/** Adds the observing middleware to an SDK client. */
export function observeCalls(client: { middlewareStack: unknown }, service: ObservedService, onCall: CallObserver): void {
  const stack = client.middlewareStack as {
    add(middleware: unknown, options: { step: string; name: string }): void;
  };
  stack.add(
    (next: (args: { input: Input }) => Promise<{ output: Output }>, context: { commandName?: string }) =>
      async (args: { input: Input }) => {
        const command = context.commandName ?? 'unknown';
        // A caller that asked for a report itself keeps it.
        const asked = args.input.ReturnConsumedCapacity === 'TOTAL' || args.input.ReturnConsumedCapacity === 'INDEXES';
        const measure = service === 'dynamodb' && CAPACITY_REPORTING.has(command) && !asked;
        const started = performance.now();
        try {
          const result = await next(measure ? { ...args, input: { ...args.input, ReturnConsumedCapacity: 'TOTAL' } } : args);
          const output = result.output;
          onCall({ service, command, input: args.input, ...(output && { output: { ...output } }), elapsedMs: performance.now() - started });
          if (measure && output) delete output.ConsumedCapacity;
          return result;
        } catch (error) {
          onCall({
            service,
            command,
            input: args.input,
            errorName: error instanceof Error ? error.name : 'Error',
            elapsedMs: performance.now() - started,
          });
          throw error;
        }
      },
    { step: 'initialize', name: 'sluiceCallObserver' },
  );
}
