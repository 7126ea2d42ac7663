// DataWorkloads: the `data.folder` row — the image-folder loader (read, TurboJPEG decode,
// RandomResizedCrop(224) + RandomHorizontalFlip + Normalize to 3×224×224, batches of 64) in
// images/s with 1 and 2 workers, against TurboJPEG's own full decode of the same files on as many
// threads (the ceiling), and beside torchvision's DataLoader with PIL on the same files and
// workers when --python has torch and torchvision. The JPEGs (500×375, the typical ImageNet
// size) are written at bench time from a seeded synthetic picture by TurboJPEG's compressor into
// a temporary folder; nothing is downloaded.
import CTurboJPEG
import Foundation
import ImageData
import TensorCore

/// A seeded 500×375 picture per index: gradients, a disc, stripes and noise (so the JPEGs have
/// the entropy of a photograph rather than of a flat image).
private func benchPicture(_ index: Int, width: Int = 500, height: Int = 375) -> RGBImage {
  var rng = SeededGenerator(seed: UInt64(1000 + index))
  var p = [UInt8](repeating: 0, count: width * height * 3)
  let cx = Double(rng.nextInt(below: width)), cy = Double(rng.nextInt(below: height)), r = Double(40 + rng.nextInt(below: 120))
  let f = 3 + Double(rng.nextInt(below: 12))
  for y in 0..<height {
    for x in 0..<width {
      let i = (y * width + x) * 3
      let inside = (Double(x) - cx) * (Double(x) - cx) + (Double(y) - cy) * (Double(y) - cy) < r * r
      let noise = Int(rng.next() % 24) - 12
      p[i] = UInt8(clamping: x * 255 / width + noise)
      p[i + 1] = UInt8(clamping: Int(128 + 90 * sin(Double(x) / f + Double(y) / (2 * f))) + noise)
      p[i + 2] = UInt8(clamping: (inside ? 210 : 40) + y * 40 / height + noise)
    }
  }
  return RGBImage(width: width, height: height, pixels: p)
}

/// Writes `count` JPEGs (quality 90, 4:2:0) into DIR/train/c0 and c1; returns DIR.
private func writeBenchFolder(count: Int) throws -> String {
  let dir = FileManager.default.temporaryDirectory.appendingPathComponent("acon-bench-folder-\(getpid())").path
  let encoder = JPEGEncoder()
  for i in 0..<count {
    let sub = "\(dir)/train/c\(i % 2)"
    try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
    try Data(try encoder.encode(benchPicture(i), quality: 90)).write(to: URL(fileURLWithPath: "\(sub)/\(i).jpg"))
  }
  return dir
}

/// TurboJPEG's full-size RGB decode of every file (read from disk each time, as the loader does),
/// split over `threads` threads; seconds per pass over the files.
private func turboJPEGPass(_ paths: [String], threads: Int) throws -> Double {
  let failures = UncheckedSendable(NSLock())
  nonisolated(unsafe) var failure: String?
  let start = DispatchTime.now().uptimeNanoseconds
  DispatchQueue.concurrentPerform(iterations: threads) { t in
    guard let tj = tjInitDecompress() else { return }
    defer { tjDestroy(tj) }
    var out = [UInt8]()
    for k in stride(from: t, to: paths.count, by: threads) {
      guard let data = FileManager.default.contents(atPath: paths[k]) else { continue }
      let bytes = [UInt8](data)
      var w: Int32 = 0, h: Int32 = 0, s: Int32 = 0, c: Int32 = 0
      let ok = bytes.withUnsafeBufferPointer { b -> Bool in
        guard tjDecompressHeader3(tj, b.baseAddress, UInt(b.count), &w, &h, &s, &c) == 0 else { return false }
        if out.count < Int(w * h * 3) { out = [UInt8](repeating: 0, count: Int(w * h * 3)) }
        return out.withUnsafeMutableBufferPointer {
          tjDecompress2(tj, b.baseAddress, UInt(b.count), $0.baseAddress, w, 0, h, Int32(TJPF_RGB.rawValue), 0) == 0
        }
      }
      if !ok {
        failures.value.lock()
        failure = paths[k]
        failures.value.unlock()
      }
    }
  }
  let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
  if let f = failure { throw WorkloadFailure(workload: "data.folder", detail: "TurboJPEG could not decode \(f)") }
  return seconds
}

/// CPU time of the calling thread, seconds.
private func threadCPUSeconds() -> Double {
  var ts = timespec()
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
  return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Where one image's time goes on one thread (thread CPU time, µs per image, median of
/// `rounds` passes over `paths`): read the file, TurboJPEG's full decode (the ceiling's work),
/// the loader's decode (full, or cropped to the rows and columns the crop reads), the resize
/// of the crop to 224×224, the floats (flip + normalise), and the whole `ImageProcessor.process`;
/// and the 1-worker ceiling fraction in CPU time.
private func stageBreakdown(_ paths: [String], pipeline: ImagePipeline, rounds: Int) throws -> [(String, Double)] {
  let processor = ImageProcessor()
  let decoder = ImageDecoder()
  let resampler = Resampler()
  guard let tj = tjInitDecompress() else { throw WorkloadFailure(workload: "data.folder", detail: "TurboJPEG could not start") }
  defer { tjDestroy(tj) }
  var full = [UInt8](), decoded = RGBImage(), resized = RGBImage()
  let out = UnsafeMutablePointer<Float>.allocate(capacity: 3 * 224 * 224)
  defer { out.deallocate() }
  let names = ["read", "turbojpeg_full_decode", "decode", "resize", "flip_normalize", "process_total"]
  var samples = [[Double]](repeating: [], count: names.count)
  let files = try paths.map { try ImageFile.read($0) }
  for _ in 0..<rounds {
    var t = [Double](repeating: 0, count: names.count)
    for (k, path) in paths.enumerated() {
      var c0 = threadCPUSeconds()
      _ = try ImageFile.read(path)
      var c1 = threadCPUSeconds()
      t[0] += c1 - c0
      try files[k].withUnsafeBytes { b in
        var w: Int32 = 0, h: Int32 = 0, s: Int32 = 0, cs: Int32 = 0
        c0 = threadCPUSeconds()
        let src = b.baseAddress!.assumingMemoryBound(to: UInt8.self)
        guard tjDecompressHeader3(tj, src, UInt(b.count), &w, &h, &s, &cs) == 0 else {
          throw WorkloadFailure(workload: "data.folder", detail: "TurboJPEG could not read \(path)")
        }
        if full.count < Int(w * h * 3) { full = [UInt8](repeating: 0, count: Int(w * h * 3)) }
        let rc = full.withUnsafeMutableBufferPointer {
          tjDecompress2(tj, src, UInt(b.count), $0.baseAddress, w, 0, h, Int32(TJPF_RGB.rawValue), 0)
        }
        c1 = threadCPUSeconds()
        guard rc == 0 else { throw WorkloadFailure(workload: "data.folder", detail: "TurboJPEG could not decode \(path)") }
        t[1] += c1 - c0
        // The loader's stages, with the crop sample k of epoch 0 draws.
        var rng = ImageLoader.sampleGenerator(seed: 1, epoch: 0, position: k)
        c0 = threadCPUSeconds()
        let header = try decoder.header(b, name: path)
        let crop = randomResizedCropParameters(
          width: header.width, height: header.height, scale: 0.08...1, ratio: (3.0 / 4)...(4.0 / 3), rng: &rng)
        let region = try decoder.decode(b, name: path, into: &decoded, covering: crop)
        c1 = threadCPUSeconds()
        t[2] += c1 - c0
        c0 = threadCPUSeconds()
        resampler.resample(
          decoded, x: ResampleAxis(crop: crop.left - region.left, crop.left - region.left + crop.width, outSize: 224),
          y: ResampleAxis(crop: crop.top - region.top, crop.top - region.top + crop.height, outSize: 224), into: &resized)
        c1 = threadCPUSeconds()
        t[3] += c1 - c0
        c0 = threadCPUSeconds()
        processor.write(resized, convention: pipeline.convention, into: out)
        c1 = threadCPUSeconds()
        t[4] += c1 - c0
        rng = ImageLoader.sampleGenerator(seed: 1, epoch: 0, position: k)
        c0 = threadCPUSeconds()
        try processor.process(b, name: path, pipeline: pipeline, rng: &rng, into: out)
        c1 = threadCPUSeconds()
        t[5] += c1 - c0
      }
    }
    for i in 0..<names.count { samples[i].append(t[i] / Double(paths.count) * 1e6) }
  }
  var stages = names.enumerated().map { ("stage_\($0.element)_us", samples[$0.offset].sorted()[rounds / 2]) }
  // The ceiling fraction in thread CPU time (robust to other processes): (read + TurboJPEG's
  // full decode) / (read + the loader's whole processing), per round, median.
  let fractions = (0..<rounds).map { r in (samples[0][r] + samples[1][r]) / (samples[0][r] + samples[5][r]) }
  stages.append(("ceiling_fraction_cpu", fractions.sorted()[rounds / 2]))
  return stages
}

/// The `data.folder` rows: one per worker count (1 and 2).
func dataWorkloads(options: BenchOptions, emit: (BenchResult) throws -> Void) throws {
  guard options.wants("data.folder") else { return }
  let count = options.quick ? 64 : 512
  let dir = try writeBenchFolder(count: count)
  defer { try? FileManager.default.removeItem(atPath: dir) }
  let split = try ImageFolderSplits.load(directory: dir)
  let pipeline = ImagePipeline([.randomResizedCrop(224), .randomHorizontalFlip(p: 0.5)], convention: .imageNet)
  let batch = 64
  // The check: the workers' batch is the synchronous reference's, bit for bit, and finite.
  let check = ImageLoader(folder: split.train, pipeline: pipeline, batchSize: batch, shuffle: true, seed: 1, workers: 2)
  check.startEpoch(0)
  guard let first = try check.next() else { throw WorkloadFailure(workload: "data.folder", detail: "no batch") }
  let reference = Tensor(zeros: [1])
  var labels = [Int32]()
  try check.batch(0, epoch: 0, into: reference, labels: &labels)
  try TestSupportBridge.checkSame("data.folder batch 0 (workers against the synchronous path)", first.x, reference)
  let repetitions = options.quick ? 1 : Swift.min(options.repetitions, 3)
  let torchvision = try TorchvisionData.available(options)
  let stages = try stageBreakdown(Array(split.train.paths.prefix(options.quick ? 32 : 256)), pipeline: pipeline, rounds: options.quick ? 1 : 3)
  for workers in [1, 2] {
    let loader = ImageLoader(folder: split.train, pipeline: pipeline, batchSize: batch, shuffle: true, seed: 1, workers: workers)
    var epoch = 0
    var ours = [Double](), ceiling = [Double]()
    for _ in 0..<repetitions {
      // Alternate ours and the ceiling, so both see the same machine load.
      let t0 = DispatchTime.now().uptimeNanoseconds
      loader.startEpoch(epoch)
      epoch += 1
      var n = 0
      while let b = try loader.next() { n += b.labels.count }
      guard n == count else { throw WorkloadFailure(workload: "data.folder", detail: "an epoch gave \(n) of \(count) images") }
      ours.append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
      ceiling.append(try turboJPEGPass(split.train.paths, threads: workers))
    }
    let s = ours.sorted()[ours.count / 2], c = ceiling.sorted()[ceiling.count / 2]
    let ips = Double(count) / s, ceilingIPS = Double(count) / c
    var metrics: [(String, Any)] = [
      ("workers", workers), ("images", count), ("source", "500x375 JPEG q90"), ("images_per_s", ips),
      ("turbojpeg_decode_images_per_s", ceilingIPS), ("ceiling_fraction", ips / ceilingIPS),
    ]
    if workers == 1 { metrics += stages.map { ($0.0, $0.1 as Any) } }
    if torchvision, let tv = try TorchvisionData.imagesPerSecond(dir: dir, workers: workers, batch: batch, options: options) {
      metrics += [("torchvision_images_per_s", tv), ("speedup_vs_torchvision", ips / tv)]
    }
    try emit(BenchResult(name: "data.folder", shape: [batch, 3, 224, 224], medianSeconds: s / Double(count) * Double(batch), metrics: metrics))
  }
}

/// The bit-for-bit comparison of two tensors, failing the run with the first difference.
enum TestSupportBridge {
  static func checkSame(_ what: String, _ a: Tensor, _ b: Tensor) throws {
    guard a.shape == b.shape else { throw WorkloadFailure(workload: what, detail: "shapes \(a.shape) and \(b.shape)") }
    for i in 0..<a.count where a.data[i] != b.data[i] || !a.data[i].isFinite {
      throw WorkloadFailure(workload: what, detail: "element \(i): \(a.data[i]) against \(b.data[i])")
    }
  }
}

/// torchvision's DataLoader over the same folder (Benchmarks/pytorch/data_folder.py).
enum TorchvisionData {
  static func available(_ options: BenchOptions) throws -> Bool {
    guard PyTorch.available(options) else { return false }
    let (status, _, err, _) = try PyTorch.run(options.python, [PyTorch.script("data_folder.py"), "--probe"])
    if status != 0 {
      PyTorch.note("torchvision or PIL is missing (\(err.split(separator: "\n").last ?? "")); data.folder has no torchvision column")
      return false
    }
    return true
  }

  static func imagesPerSecond(dir: String, workers: Int, batch: Int, options: BenchOptions) throws -> Double? {
    let obj = try PyTorch.runScript("data_folder.py", ["--dir", dir, "--workers", String(workers), "--batch", String(batch),
      "--repetitions", String(options.quick ? 1 : Swift.min(options.repetitions, 3))], workload: "torchvision data.folder", options: options)
    return obj["images_per_s"] as? Double
  }
}
