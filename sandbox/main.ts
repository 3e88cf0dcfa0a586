/** `npm start`: the sandbox on http://127.0.0.1:8787 (PORT), until Ctrl-C. */
import { overridesFromEnv, withProblems } from '../functions/core/config.ts';
import { ConfigError } from '../functions/core/errors.ts';
import { DataDirError } from './data-dir.ts';
import { type Sandbox, startSandbox, walkthrough } from './sandbox.ts';
import { SandboxThreadError } from './threads.ts';

const port = Number(process.env.PORT || 8787);
// A bad PORT is listed with the settings' problems (startSandbox checks them all before it
// listens on anything), not reported alone and the rest only at the next start.
const portProblems =
  Number.isInteger(port) && port >= 0 && port <= 65_535 ? [] : [`PORT must be a port number (0 to 65535), not ${process.env.PORT}`];

// Powertools takes a level it does not know for INFO, without a word: louder than the
// default, where whoever set it wanted something else. Any case, as Powertools reads it.
const LOG_LEVELS = ['DEBUG', 'INFO', 'WARN', 'ERROR', 'SILENT'] as const;
type LogLevel = (typeof LOG_LEVELS)[number];
const logLevel = (process.env.POWERTOOLS_LOG_LEVEL || 'WARN').toUpperCase();
const logLevelProblems = (LOG_LEVELS as readonly string[]).includes(logLevel)
  ? []
  : [`POWERTOOLS_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, not ${process.env.POWERTOOLS_LOG_LEVEL}`];

let sandbox: Sandbox;
try {
  sandbox = await startSandbox({
    port,
    ...(process.env.SLUICE_ADMIN_KEY && { adminKey: process.env.SLUICE_ADMIN_KEY }),
    ...(process.env.SLUICE_DATA_DIR && { dataDir: process.env.SLUICE_DATA_DIR }),
    config: withProblems(overridesFromEnv(process.env), [...portProblems, ...logLevelProblems]),
    logLevel: logLevel as LogLevel,
    // Half a sandbox answers nothing useful: say which thread stopped, and stop.
    onFailure: (error) => {
      console.error(`\n${error.message}\nsluice sandbox stopped; start it again with npm start.`);
      process.exit(1);
    },
  });
} catch (error) {
  // What a first `npm start` most often meets: another sandbox (or anything) on the port.
  // A sentence that says what to do, not a worker thread's stack trace.
  if (error instanceof Error && /EADDRINUSE/.test(error.message)) {
    fail(`Port ${port} is in use: stop what listens there, or start on another, e.g. PORT=8788 npm start.`);
  }
  // Settings it was given that cannot be (PORT, POWERTOOLS_LOG_LEVEL, SLUICE_ADMIN_KEY, a SLUICE_<SETTING>): which, and why, all at once.
  if (error instanceof ConfigError) fail(error.message);
  // Another sandbox on the same SLUICE_DATA_DIR (which process), or one that is a file: what to do.
  if (error instanceof DataDirError) fail(error.message);
  // A thread that could not start (the emulators on a data folder whose store does not open): its sentence.
  if (error instanceof SandboxThreadError) fail(error.message);
  throw error;
}

// Ctrl-C is handled before the banner that says so is printed: one pressed as soon as it
// appears stops the sandbox cleanly, not by the signal's default.
let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) {
      // A second Ctrl-C: the stop waits for work under way (a delivery to an endpoint that
      // hangs takes up to its timeout), and whoever presses again does not want to wait.
      process.stdout.write('Stopping now, without waiting for work under way.\n');
      process.exit(130);
    }
    stopping = true;
    process.stdout.write('\nStopping sluice sandbox…\n');
    sandbox.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  });
}

process.stdout.write(
  [
    '',
    `sluice sandbox on ${sandbox.url}  (Node ${process.versions.node})`,
    `admin key: ${sandbox.adminKey}`,
    sandbox.config.allowPrivateTargets ? 'private and http:// webhook targets are allowed (sandbox).' : '',
    '',
    'Try it (paste into a shell):',
    '',
    walkthrough(sandbox.url, sandbox.adminKey),
    '',
    'Ctrl-C stops the sandbox (twice: at once).',
    '',
  ].join('\n'),
);

function fail(message: string): never {
  console.error(`${message}\nsluice sandbox not started.`);
  process.exit(1);
}
