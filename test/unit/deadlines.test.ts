import { describe, expect, it } from 'vitest';
import { type DeadlineGroup, type DeadlineNode, Deadlines } from '../../src/engine/deadlines.js';
import { FakeClock } from '../support/fake-clock.js';

class Node implements DeadlineNode<Node> {
  dGroup: DeadlineGroup<Node> | undefined = undefined;
  dIndex = 0;
  constructor(readonly name: string) {}
}

function setup(onExpire?: (node: Node, deadlines: Deadlines<Node>) => void) {
  const clock = new FakeClock();
  const expired: string[] = [];
  const deadlines: Deadlines<Node> = new Deadlines<Node>(clock, (node) => {
    expired.push(`${node.name}@${clock.now()}`);
    onExpire?.(node, deadlines);
  });
  return { clock, deadlines, expired };
}

describe('Deadlines', () => {
  it('puts nodes added one after another with the same deadline in one group, and others apart', () => {
    const { deadlines } = setup();
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((name) => new Node(name)) as [Node, Node, Node, Node];
    deadlines.add(a, 10, 0);
    deadlines.add(b, 10, 0);
    deadlines.add(c, 10, 1);
    deadlines.add(d, 20, 0);
    expect(a.dGroup).toBe(b.dGroup);
    expect(b.dIndex).toBe(1);
    expect(c.dGroup).not.toBe(a.dGroup);
    expect(d.dGroup).not.toBe(a.dGroup);
    expect(a.dGroup?.live).toBe(2);
  });

  it('expires each node at its deadline, in order, skipping those removed', async () => {
    const { clock, deadlines, expired } = setup();
    const nodes = ['a', 'b', 'c', 'd', 'e'].map((name) => new Node(name));
    deadlines.add(nodes[0]!, 10, 0);
    deadlines.add(nodes[1]!, 10, 0);
    deadlines.add(nodes[2]!, 10, 0);
    deadlines.add(nodes[3]!, 5, 0);
    await clock.advance(3);
    deadlines.add(nodes[4]!, 10, 3);
    deadlines.remove(nodes[1]!);
    deadlines.remove(nodes[1]!); // twice: a no-op
    await clock.advance(20);
    expect(expired).toEqual(['d@5', 'a@10', 'c@10', 'e@13']);
    expect(nodes.every((node) => node.dGroup === undefined)).toBe(true);
    expect(clock.pending().total).toBe(0);
  });

  it('stops its timer once every node is removed, and a group emptied early never fires', async () => {
    const { clock, deadlines, expired } = setup();
    const a = new Node('a');
    const b = new Node('b');
    const c = new Node('c');
    deadlines.add(a, 10, 0);
    deadlines.add(b, 10, 0);
    deadlines.add(c, 30, 0);
    deadlines.remove(a);
    deadlines.remove(b);
    expect(clock.pending().keepAlive).toBe(1);
    await clock.advance(15);
    expect(expired).toEqual([]);
    deadlines.remove(c);
    expect(clock.pending().keepAlive).toBe(0);
    await clock.advance(30);
    expect(expired).toEqual([]);
  });

  it('lets an expiry callback remove or add nodes, of its own group included', async () => {
    const nodes = ['a', 'b', 'c'].map((name) => new Node(name));
    const late = new Node('late');
    const { clock, deadlines, expired } = setup((node, d) => {
      if (node.name === 'a') {
        d.remove(nodes[1]!); // a member of the same group, not yet expired
        d.add(late, 10, clock.now());
      }
    });
    for (const node of nodes) deadlines.add(node, 10, 0);
    await clock.advance(10);
    expect(expired).toEqual(['a@10', 'c@10']);
    await clock.advance(10);
    expect(expired).toEqual(['a@10', 'c@10', 'late@20']);
    expect(clock.pending().total).toBe(0);
  });

  it('keeps every timeout list in order while groups come and go', async () => {
    const { clock, deadlines, expired } = setup();
    const kept: string[] = [];
    let n = 0;
    for (let t = 0; t < 50; t++) {
      for (const timeoutMs of [7, 13]) {
        const group = Array.from({ length: 3 }, () => new Node(`${timeoutMs}:${t}:${n++}`));
        for (const node of group) deadlines.add(node, timeoutMs, t);
        // The middle one leaves: a hole the expiry must skip.
        deadlines.remove(group[1]!);
        kept.push(`${group[0]!.name}@${t + timeoutMs}`, `${group[2]!.name}@${t + timeoutMs}`);
      }
      await clock.advance(1);
    }
    await clock.advance(20);
    const at = (entry: string) => Number(entry.split('@')[1]);
    expect([...expired].sort((x, y) => at(x) - at(y))).toEqual(expired);
    expect([...expired].sort()).toEqual([...kept].sort());
  });
});
