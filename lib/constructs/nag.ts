/**
 * cdk-nag 3 reports through CDK's own validation (`Validations.of(app).addPlugins`),
 * and an acknowledgement names the plugin and the finding: `AwsSolutions::<rule>[<finding>]`.
 * Acknowledged this way, a finding is listed with its reason in cdk.out/validation-report.json.
 */
import { Validations } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';

/** Acknowledges an AwsSolutions finding on `scope` and everything under it; `reason` is one sentence saying why. */
export function acknowledgeNag(scope: IConstruct, finding: string, reason: string): void {
  Validations.of(scope).acknowledge({ id: `AwsSolutions::${finding}`, reason });
}
