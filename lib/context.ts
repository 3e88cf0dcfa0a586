/**
 * The CDK app's config overrides, from the context key `sluice`: cdk.json's object
 * (`"sluice": {"objectQueueCap": 5000}`), or `-c 'sluice={"objectQueueCap":5000}'`, which
 * arrives as a string (and replaces cdk.json's object: the CLI does not merge them).
 * Every mistake is reported at once, by name: those met here travel with the overrides
 * (withProblems), and `Sluice` (buildConfig) lists them with the settings' own, so a bad
 * setting under `sluice` is not left for the next synth.
 */
import { RemovalPolicy } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { DEFAULT_CONFIG, withProblems } from '../functions/core/config.ts';

export const CONTEXT_KEY = 'sluice';

const EXAMPLE = `-c '${CONTEXT_KEY}={"objectQueueCap":5000}'`;

export function overridesFromContext(scope: Construct): Readonly<Record<string, unknown>> {
  const problems: string[] = [];
  // `-c objectQueueCap=5000` or `-c sluice.objectQueueCap=5000` read naturally, and the
  // app would never look at them: the deploy would quietly keep the default.
  for (const [key, value] of Object.entries(scope.node.getAllContext())) {
    const setting = key.startsWith(`${CONTEXT_KEY}.`) ? key.slice(CONTEXT_KEY.length + 1) : key;
    if (Object.hasOwn(DEFAULT_CONFIG, setting)) {
      problems.push(`${key} is a sluice setting: put it under the context key \`${CONTEXT_KEY}\` (${EXAMPLE}, or in cdk.json)`);
    }
    // So would settings under a key that is not `sluice` (`"Sluice": {…}` in cdk.json,
    // `-c 'sluice_config={…}'`). Only an object that names a setting is taken for one: the
    // context holds the CDK's own keys too (feature flags, lookups).
    const named = key === CONTEXT_KEY ? [] : settingsNamedBy(value);
    if (named.length > 0) {
      problems.push(
        `The context key \`${key}\` holds sluice settings (${named.join(', ')}): put them under the context key \`${CONTEXT_KEY}\` (${EXAMPLE}, or in cdk.json)`,
      );
    }
  }
  const value: unknown = scope.node.tryGetContext(CONTEXT_KEY);
  let parsed: unknown = value ?? {};
  if (typeof value === 'string') {
    try {
      parsed = JSON.parse(value);
    } catch (error) {
      problems.push(`The context value \`${CONTEXT_KEY}\` is not JSON (${(error as Error).message}): write ${EXAMPLE}`);
      parsed = {};
    }
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    problems.push(`The context value \`${CONTEXT_KEY}\` must be a JSON object of settings, as in ${EXAMPLE}`);
    parsed = {};
  }
  return withProblems(parsed as Record<string, unknown>, problems);
}

/** The setting names an object (or a JSON string of one, as `-c` gives it) has for keys. */
function settingsNamedBy(value: unknown): string[] {
  let object = value;
  if (typeof value === 'string') {
    try {
      object = JSON.parse(value);
    } catch {
      return [];
    }
  }
  if (typeof object !== 'object' || object === null || Array.isArray(object)) return [];
  return Object.keys(object).filter((name) => Object.hasOwn(DEFAULT_CONFIG, name));
}

/** Context keys for the deploy's own choices, which are not settings of the functions. */
export const TABLE_REMOVAL_KEY = `${CONTEXT_KEY}:tableRemovalPolicy`;
export const CLOUDWATCH_ROLE_KEY = `${CONTEXT_KEY}:apiGatewayCloudWatchRole`;

/** The `Sluice` props a deployer of the `Sluice` stack chooses in context, and what was wrong with them. */
export interface DeployChoices {
  readonly tableRemovalPolicy?: RemovalPolicy;
  readonly apiGatewayCloudWatchRole?: boolean;
  readonly problems: readonly string[];
}

/**
 * The props of `Sluice` that `npx cdk deploy` of the stack would otherwise fix in code:
 * `-c sluice:tableRemovalPolicy=destroy` for a test deployment whose tables go with it,
 * `-c sluice:apiGatewayCloudWatchRole=false` where another stack sets API Gateway's
 * account-wide CloudWatch role. Values from `-c` arrive as strings, from cdk.json as JSON.
 */
export function deployChoicesFromContext(scope: Construct): DeployChoices {
  const problems: string[] = [];
  const removal: unknown = scope.node.tryGetContext(TABLE_REMOVAL_KEY);
  const removalPolicies: Record<string, RemovalPolicy> = { retain: RemovalPolicy.RETAIN, destroy: RemovalPolicy.DESTROY };
  const tableRemovalPolicy = typeof removal === 'string' ? removalPolicies[removal.toLowerCase()] : undefined;
  if (removal !== undefined && tableRemovalPolicy === undefined) {
    problems.push(`The context value \`${TABLE_REMOVAL_KEY}\` must be retain or destroy, not ${JSON.stringify(removal)}`);
  }
  const role: unknown = scope.node.tryGetContext(CLOUDWATCH_ROLE_KEY);
  const apiGatewayCloudWatchRole = role === true || role === 'true' ? true : role === false || role === 'false' ? false : undefined;
  if (role !== undefined && apiGatewayCloudWatchRole === undefined) {
    problems.push(`The context value \`${CLOUDWATCH_ROLE_KEY}\` must be true or false, not ${JSON.stringify(role)}`);
  }
  return {
    ...(tableRemovalPolicy !== undefined && { tableRemovalPolicy }),
    ...(apiGatewayCloudWatchRole !== undefined && { apiGatewayCloudWatchRole }),
    problems,
  };
}
