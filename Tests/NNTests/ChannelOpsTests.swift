// ChannelOpsTests: the plane-moving kernels (concat, splits, channel shuffle) and the residual
// add against their Double twins and against hand-written index lists that follow the official
// ShuffleNetV2 `channel_shuffle` (nmaac/acon, ACON/ShuffleNetV2_ACON/network.py), odd shapes
// included; the ChannelShuffle layer's gradient by finite differences.
import CAconKernels
import Foundation
import NN
import TensorCore
import TestSupport
import XCTest

final class ChannelOpsTests: XCTestCase {
  /// A tensor whose element is `1000·n + 10·c + (position in the plane)`, so that the channel a
  /// value came from can be read off it.
  private func labelled(_ shape: [Int]) -> Tensor {
    let t = Tensor(zeros: shape)
    let c = shape[1], plane = shape.dropFirst(2).reduce(1, *)
    for i in 0..<t.count { t[i] = Float(1000 * (i / (c * plane)) + 10 * ((i / plane) % c) + i % plane) }
    return t
  }

  /// The source channel of every output channel of sample 0 (plane position 0).
  private func channels(_ t: Tensor) -> [Int] {
    let plane = t.shape.dropFirst(2).reduce(1, *)
    return (0..<t.shape[1]).map { Int(t[$0 * plane]) / 10 }
  }

  private func runGraph(_ x: Tensor, _ build: (Graph) -> GraphValue) throws -> Tensor {
    let g = Graph()
    g.output = build(g)
    return try g.forward(x)
  }

  func testEvenOddSplitMatchesTheOfficialChannelShuffle() throws {
    // Official: x.reshape(N·C/2, 2, H·W).permute(1, 0, 2).reshape(2, N, C/2, H, W); x[0], x[1].
    // For C = 8 that is channels 0, 2, 4, 6 and 1, 3, 5, 7; the main branch gets the odd ones.
    let x = labelled([2, 8, 3, 5])
    let g = Graph()
    let (a, b) = g.split(g.input, .evenOdd)
    g.output = g.concat(a, b)
    let y = try g.forward(x)
    XCTAssertEqual(channels(y), [0, 2, 4, 6, 1, 3, 5, 7])
    let halves = try runGraph(x) { g in let (p, q) = g.split(g.input, .halves); return g.concat(q, p) }
    XCTAssertEqual(channels(halves), [4, 5, 6, 7, 0, 1, 2, 3])
    // Each part against the literal reshape/permute twin, for every sample and position.
    for (evenOdd, mode) in [(true, ChannelSplit.evenOdd), (false, .halves)] {
      for shape in [[2, 8, 3, 5], [1, 2, 1, 1], [3, 6, 2, 3], [2, 4], [1, 10, 7, 1]] {
        var rng = SeededGenerator(seed: 5)
        let x = Tensor.uniform(shape, using: &rng)
        let want = Reference.splitChannels(DoubleTensor(x), evenOdd: evenOdd)
        for part in 0..<2 {
          let y = try runGraph(x) { g in let (p, q) = g.split(g.input, mode); return part == 0 ? p : q }
          assertClose(y, part == 0 ? want.0 : want.1, rtol: 0, atol: 0, "\(mode) part \(part) \(shape)")
        }
      }
    }
  }

  func testChannelShuffleIndices() throws {
    // y[:, j·g + i] = x[:, i·(C/g) + j], written out by hand.
    let cases: [(c: Int, g: Int, want: [Int])] = [
      (6, 3, [0, 2, 4, 1, 3, 5]), (6, 2, [0, 3, 1, 4, 2, 5]), (9, 3, [0, 3, 6, 1, 4, 7, 2, 5, 8]),
      (5, 5, [0, 1, 2, 3, 4]), (5, 1, [0, 1, 2, 3, 4]), (1, 1, [0]), (8, 4, [0, 2, 4, 6, 1, 3, 5, 7]),
    ]
    for (c, g, want) in cases {
      let x = labelled([2, c, 2, 3])
      let layer = ChannelShuffle(groups: g)
      let y = try layer.forward(x)
      XCTAssertEqual(channels(y), want, "C \(c) g \(g)")
      assertClose(y, Reference.channelShuffle(DoubleTensor(x), groups: g), rtol: 0, atol: 0)
      let viaGraph = try runGraph(x) { $0.shuffle($0.input, groups: g) }
      XCTAssertEqual(viaGraph.array, y.array)
      // Backward is the inverse permutation.
      let dx = try layer.backward(y)
      XCTAssertEqual(dx.array, x.array, "C \(c) g \(g): backward inverts forward")
    }
    // The official even/odd split is a shuffle with C/2 groups followed by halves.
    let x = labelled([1, 8, 2, 2])
    let s = try ChannelShuffle(groups: 4).forward(x)
    XCTAssertEqual(channels(s), [0, 2, 4, 6, 1, 3, 5, 7])
    XCTAssertThrowsError(try ChannelShuffle(groups: 4).forward(Tensor(zeros: [1, 6, 2, 2]))) { error in
      XCTAssertTrue("\(error)".contains("multiple of 4"), "\(error)")
    }
  }

  func testConcatAgainstReference() throws {
    var rng = SeededGenerator(seed: 7)
    let shapes: [[[Int]]] = [
      [[2, 1, 3, 5], [2, 3, 3, 5], [2, 2, 3, 5]], [[1, 4, 1, 1], [1, 1, 1, 1]], [[3, 2], [3, 5]],
      [[2, 17, 9, 9], [2, 30, 9, 9]],
    ]
    for parts in shapes {
      let xs = parts.map { Tensor.uniform($0, using: &rng) }
      let total = parts.reduce(0) { $0 + $1[1] }
      var full = parts[0]
      full[1] = total
      // The kernel directly against the twin.
      let out = Tensor(zeros: full)
      var start = 0
      let plane = full.dropFirst(2).reduce(1, *)
      for x in xs {
        ChannelOps.copyPlanes(from: x.data, srcChannels: x.shape[1], srcStart: 0, to: out.data, dstChannels: total,
          dstStart: start, count: x.shape[1], batch: full[0], plane: plane)
        start += x.shape[1]
      }
      assertClose(out, Reference.concatChannels(xs.map(DoubleTensor.init)), rtol: 0, atol: 0, "\(parts)")
    }
  }

  func testConcatAndAddInAGraphAgainstReference() throws {
    var rng = SeededGenerator(seed: 8)
    for shape in [[2, 3, 3, 5], [1, 1, 1, 1], [2, 5], [1, 7, 2, 1]] {
      let x = Tensor.uniform(shape, using: &rng)
      let g = Graph()
      let s = g.shuffle(g.input, groups: 1)
      let sum = g.add(g.input, s, g.input)
      g.output = g.concat(s, sum, g.input)
      let y = try g.forward(x)
      let xd = DoubleTensor(x)
      let want = Reference.concatChannels([xd, Reference.add([xd, xd, xd]), xd])
      assertClose(y, want, rtol: 1e-6, atol: 0, "\(shape)")  // Float sums of three
      // Backward: dx = dy₀ + 3·dy₁ + dy₂ (the slices of dy), the fork's gradients summed.
      let dy = Tensor.uniform(y.shape, using: &rng)
      let dx = try g.backward(dy)
      let c = shape[1], dyd = DoubleTensor(dy)
      let slices = (0..<3).map { Reference.sliceChannels(dyd, start: $0 * c, count: c) }
      let wantDx = Reference.add([slices[0], slices[1], slices[1], slices[1], slices[2]])
      assertClose(dx, wantDx, rtol: 1e-6, atol: 1e-6, "\(shape) backward")
    }
  }

  func testSplitBackwardAgainstReference() throws {
    var rng = SeededGenerator(seed: 9)
    for (mode, evenOdd) in [(ChannelSplit.evenOdd, true), (.halves, false)] {
      for shape in [[2, 6, 3, 5], [1, 2, 1, 1], [3, 4]] {
        let x = Tensor.uniform(shape, using: &rng)
        // Both halves used (scaled differently through a concat), then only the second one.
        let g = Graph()
        let (p, q) = g.split(g.input, mode)
        g.output = g.concat(q, p)
        let y = try g.forward(x)
        let dy = Tensor.uniform(y.shape, using: &rng)
        let dx = try g.backward(dy)
        let half = shape[1] / 2, dyd = DoubleTensor(dy)
        let dq = Reference.sliceChannels(dyd, start: 0, count: half)
        let dp = Reference.sliceChannels(dyd, start: half, count: half)
        assertClose(dx, Reference.splitChannelsBackward(dp, dq, inputShape: shape, evenOdd: evenOdd), rtol: 0, atol: 0)

        let g2 = Graph()
        g2.output = g2.split(g2.input, mode).1
        let y2 = try g2.forward(x)
        let dy2 = Tensor.uniform(y2.shape, using: &rng)
        let dx2 = try g2.backward(dy2)
        assertClose(dx2, Reference.splitChannelsBackward(nil, DoubleTensor(dy2), inputShape: shape, evenOdd: evenOdd),
          rtol: 0, atol: 0, "an unused half gets a zero gradient")
      }
    }
  }

  /// Moves above `ChannelOps.streamingThreshold` take the streaming-store copy: the same bits,
  /// on planes of odd length (so most runs start off a 64-byte line) and odd channel counts.
  /// The threshold is lowered for the test (its default, 3/8 of the last-level cache, can be
  /// tens of MB).
  func testStreamingMovesAgainstReference() throws {
    let saved = ChannelOps.streamingThreshold
    defer { ChannelOps.streamingThreshold = saved }
    ChannelOps.streamingThreshold = 1 << 19
    var rng = SeededGenerator(seed: 12)
    let plane = 37 * 41, c = ChannelOps.streamingThreshold / (4 * plane) + 1
    let a = Tensor.uniform([2, c, 37, 41], using: &rng), b = Tensor.uniform([2, c + 2, 37, 41], using: &rng)
    let y = Tensor(zeros: [2, 2 * c + 2, 37, 41])
    XCTAssertGreaterThanOrEqual(y.count, ChannelOps.streamingThreshold)
    ChannelOps.concat([a, b], into: y)
    let (ad, bd) = (DoubleTensor(a), DoubleTensor(b))
    assertClose(y, Reference.concatChannels([ad, bd]), rtol: 0, atol: 0, "concat")
    let ga = Tensor(zeros: a.shape), gb = Tensor(zeros: b.shape)
    ChannelOps.concatBackward(y, into: [ga, gb])
    assertBitwiseEqual(ga.array, a.array)
    assertBitwiseEqual(gb.array, b.array)
    // Splits of the concatenation (2c + 2 channels), and back.
    let yd = DoubleTensor(y)
    for (mode, evenOdd) in [(ChannelSplit.evenOdd, true), (.halves, false)] {
      let p = Tensor(zeros: [2, c + 1, 37, 41]), q = Tensor(zeros: [2, c + 1, 37, 41])
      ChannelOps.split(y, mode, into: p, q)
      let want = Reference.splitChannels(yd, evenOdd: evenOdd)
      assertClose(p, want.0, rtol: 0, atol: 0, "\(mode) part 0")
      assertClose(q, want.1, rtol: 0, atol: 0, "\(mode) part 1")
      let back = Tensor(zeros: y.shape)
      ChannelOps.splitBackward(p, q, mode, into: back)
      assertBitwiseEqual(back.array, y.array)
    }
    let shuffled = Tensor(zeros: y.shape)
    ChannelOps.shuffle(y.data, into: shuffled.data, batch: 2, channels: 2 * c + 2, plane: plane, groups: 2)
    assertClose(shuffled, Reference.channelShuffle(yd, groups: 2), rtol: 0, atol: 0, "shuffle")
  }

  /// The default threshold is 3/8 of the last-level cache that CAconKernels detects (the
  /// highest-level data cache in /sys, else sysconf), and it agrees with /sys where Linux
  /// describes the caches. Moves on either side of it give the same bits.
  func testStreamingThresholdFollowsTheLastLevelCache() throws {
    let llc = Int(acon_last_level_cache_bytes())
    if llc > 0 {
      XCTAssertEqual(ChannelOps.streamingThreshold, llc / 8 * 3 / 4)
    } else {
      XCTAssertEqual(ChannelOps.streamingThreshold, (16 << 20) / 8 * 3 / 4)
    }
    #if os(Linux)
      // The largest "size" among the data and unified caches of the highest "level" of cpu0.
      let root = "/sys/devices/system/cpu/cpu0/cache"
      var best: (level: Int, bytes: Int) = (0, 0)
      for i in 0..<16 {
        func read(_ name: String) -> String? {
          (try? String(contentsOfFile: "\(root)/index\(i)/\(name)", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard let levelText = read("level"), let level = Int(levelText) else { break }
        guard let type = read("type"), type != "Instruction", var size = read("size") else { continue }
        var scale = 1
        if let unit = size.last, let s = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30][String(unit)] {
          scale = s
          size.removeLast()
        }
        guard let value = Int(size) else { continue }
        if level > best.level || (level == best.level && value * scale > best.bytes) { best = (level, value * scale) }
      }
      if best.bytes > 0 { XCTAssertEqual(llc, best.bytes, "acon_last_level_cache_bytes against \(root)") }
    #endif
    // Bits on both sides of a threshold set between two sizes of the same concatenation.
    let saved = ChannelOps.streamingThreshold
    defer { ChannelOps.streamingThreshold = saved }
    var rng = SeededGenerator(seed: 13)
    let a = Tensor.uniform([3, 5, 19, 23], using: &rng), b = Tensor.uniform([3, 7, 19, 23], using: &rng)
    var outputs: [[Float]] = []
    for threshold in [1, Int.max] {
      ChannelOps.streamingThreshold = threshold
      let y = Tensor(zeros: [3, 12, 19, 23])
      ChannelOps.concat([a, b], into: y)
      let p = Tensor(zeros: [3, 6, 19, 23]), q = Tensor(zeros: [3, 6, 19, 23])
      ChannelOps.split(y, .evenOdd, into: p, q)
      outputs.append(y.array + p.array + q.array)
    }
    assertBitwiseEqual(outputs[0], outputs[1])
    assertClose(Array(outputs[0].prefix(3 * 12 * 19 * 23)),
      Reference.concatChannels([DoubleTensor(a), DoubleTensor(b)]).values, rtol: 0, atol: 0, "concat")
  }

  func testKernelsAreThreadCountIndependent() throws {
    var rng = SeededGenerator(seed: 10)
    let x = Tensor.uniform([4, 12, 9, 9], using: &rng)
    var results: [[Float]] = []
    let saved = Threads.count
    defer { Threads.count = saved }
    for t in [1, 2, 3] {
      Threads.count = t
      let g = Graph()
      let (a, b) = g.split(g.input, .evenOdd)
      g.output = g.concat(g.shuffle(g.concat(b, a), groups: 3), g.add(a, b))
      let y = try g.forward(x)
      let dx = try g.backward(y)
      results.append(y.array + dx.array)
    }
    assertBitwiseEqual(results[0], results[1])
    assertBitwiseEqual(results[0], results[2])
  }

  /// The one-loop tiling of concat, concatBackward and the halves split (and its backward, with
  /// a missing part): three parts of odd widths, runs that cross the threads' boundaries, the
  /// same bits for 1 and 2 threads, and the Double twins' values.
  func testTiledMovesAgainstReferenceForOneAndTwoThreads() throws {
    var rng = SeededGenerator(seed: 14)
    let parts = [Tensor.uniform([3, 1, 7, 9], using: &rng), .uniform([3, 4, 7, 9], using: &rng),
      .uniform([3, 3, 7, 9], using: &rng)]
    let saved = Threads.count
    defer { Threads.count = saved }
    var runs: [[Float]] = []
    for t in [1, 2] {
      Threads.count = t
      let y = Tensor(zeros: [3, 8, 7, 9])
      ChannelOps.concat(parts, into: y)
      assertClose(y, Reference.concatChannels(parts.map { DoubleTensor($0) }), rtol: 0, atol: 0, "concat")
      let g0 = Tensor(zeros: [3, 1, 7, 9]), g2 = Tensor(zeros: [3, 3, 7, 9])
      ChannelOps.concatBackward(y, into: [g0, nil, g2])  // nil takes no channels: g2 gets 1..<4
      assertBitwiseEqual(g0.array, parts[0].array)
      let p = Tensor(zeros: [3, 4, 7, 9]), q = Tensor(zeros: [3, 4, 7, 9])
      ChannelOps.split(y, .halves, into: p, q)
      let want = Reference.splitChannels(DoubleTensor(y), evenOdd: false)
      assertClose(p, want.0, rtol: 0, atol: 0, "halves part 0")
      assertClose(q, want.1, rtol: 0, atol: 0, "halves part 1")
      let back = Tensor(zeros: y.shape), half = Tensor(zeros: y.shape)
      ChannelOps.splitBackward(p, q, .halves, into: back)
      assertBitwiseEqual(back.array, y.array)
      ChannelOps.splitBackward(nil, q, .halves, into: half)
      let plane = 63
      for i in 0..<half.count {
        let ch = (i / plane) % 8
        XCTAssertEqual(half[i], ch < 4 ? 0 : y[i], "splitBackward without da, element \(i)")
      }
      runs.append(y.array + g0.array + g2.array + p.array + q.array + back.array + half.array)
    }
    assertBitwiseEqual(runs[0], runs[1])
  }

  func testChannelShuffleGradient() {
    var rng = SeededGenerator(seed: 11)
    for (shape, g) in [([2, 6, 3, 5], 3), ([1, 9, 1, 1], 3), ([1, 1, 2, 2], 1), ([3, 4], 2), ([1, 15, 2, 3], 5)] {
      GradientChecker().assertGradients(ChannelShuffle(groups: g), input: .uniform(shape, using: &rng), "\(shape) g\(g)")
    }
  }
}
