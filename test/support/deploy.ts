import { readdirSync, readFileSync } from 'node:fs';
import { parse } from 'yaml';

// The monitoring files the repository ships (deploy/), read for the tests that check them.

export const DEPLOY = new URL('../../deploy/', import.meta.url);
export const ALERTS_FILE = new URL('prometheus/alerts.yml', DEPLOY);
export const ALERT_TESTS_DIR = new URL('prometheus/tests/', DEPLOY);
export const DASHBOARD_FILE = new URL('grafana/mvsched.json', DEPLOY);

export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export function alertRules(): AlertRule[] {
  const doc = parse(readFileSync(ALERTS_FILE, 'utf8')) as { groups: Array<{ rules: AlertRule[] }> };
  return doc.groups.flatMap((g) => g.rules);
}

export function alertTestFiles(): string[] {
  return readdirSync(ALERT_TESTS_DIR)
    .filter((f) => f.endsWith('.test.yml'))
    .map((f) => new URL(f, ALERT_TESTS_DIR).pathname);
}

export interface DashboardPanel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Array<{ refId: string; expr: string; datasource?: { uid: string } }>;
}

export function dashboard(): { uid: string; title: string; panels: DashboardPanel[]; templating: { list: Array<{ name: string; type: string }> } } {
  return JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as ReturnType<typeof dashboard>;
}

/** PromQL of every dashboard target. */
export function dashboardExprs(): string[] {
  return dashboard().panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
}

/** mvsched metric names a PromQL expression reads (series names start with mvs_). */
export function metricNames(expr: string): string[] {
  return [...new Set(expr.match(/\bmvs_[a-z0-9_]+\b/g) ?? [])];
}

/**
 * Names a Prometheus text exposition offers: each `# TYPE` line's name, plus _bucket / _sum /
 * _count for histograms.
 */
export function exportedNames(body: string): Set<string> {
  const out = new Set<string>();
  for (const m of body.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    out.add(m[1]!);
    if (m[2] === 'histogram' || m[2] === 'summary') for (const s of ['_bucket', '_sum', '_count']) out.add(`${m[1]}${s}`);
  }
  return out;
}
