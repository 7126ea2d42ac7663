// ImageFolder: torchvision's folder-of-images layout — DIR/train/CLASS/*.{jpg,jpeg,png} and
// DIR/val/CLASS/*, classes sorted by name (by code point, as Python's sorted) — scanned with
// a header check of every file, and a seeded validation split when val/ is absent.
import TensorCore

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The images of one split: a path and a class index per image, the class names, and the files
/// passed over with `skipBadImages` (each a counted warning).
public struct ImageFolder: Sendable {
  /// The folder scanned (e.g. `DIR/train`).
  public var root: String
  /// The class names, sorted by code point; label i is `classes[i]`.
  public var classes: [String]
  /// Image paths, in label order then sorted path order.
  public var paths: [String]
  /// One label per path, in `0..<classes.count`.
  public var labels: [Int]
  /// What was skipped (only with `skipBadImages`): each names the file and the reason.
  public var skipped: [ImageError]

  /// The number of images.
  public var count: Int { paths.count }

  /// The file extensions torchvision's ImageFolder would take that we decode.
  public static let extensions = ["jpg", "jpeg", "png"]

  /// Scans `root`/CLASS/… (recursively, following symlinks, each directory once).
  /// - Parameters:
  ///   - classes: the class names to use (a val/ split must use train/'s); nil: the subfolders of `root`.
  ///   - skipBadImages: a file that cannot be read or whose header is bad, or an empty class
  ///     folder, becomes an entry of `skipped` instead of an error.
  /// - Throws: `ImageError` naming the folder or file: no class folders, an unreadable folder or
  ///   file (a symlink loop among them), a bad header, an image over `limits`, an empty class.
  public static func scan(root: String, classes: [String]? = nil, skipBadImages: Bool = false, limits: ImageLimits = .standard)
    throws -> ImageFolder
  {
    let names = try classes ?? listDirectory(root).filter { isDirectory(join(root, $0)) }.sorted(by: codePointLess)
    guard !names.isEmpty else {
      throw ImageError(file: root, reason: "no class folders (expected \(root)/CLASS/IMAGE.jpg, one folder per class)")
    }
    var folder = ImageFolder(root: root, classes: names, paths: [], labels: [], skipped: [])
    let decoder = ImageDecoder(limits: limits)
    var head = [UInt8](repeating: 0, count: 1 << 18)
    for (label, name) in names.enumerated() {
      let dir = join(root, name)
      var files = [String]()
      var seen = Set<[UInt64]>()
      var unreadable = [ImageError]()
      do {
        try walk(dir, into: &files, seen: &seen, unreadable: &unreadable)
      } catch let e as ImageError {
        unreadable.append(e)
      }
      if let first = unreadable.first, !skipBadImages {
        throw ImageError(file: first.file, reason: first.reason + " (pass --skip-bad-images to skip such files)")
      }
      folder.skipped += unreadable
      files.sort(by: codePointLess)
      var taken = 0
      for path in files {
        do {
          try checkHeader(path, decoder: decoder, buffer: &head, limits: limits)
          folder.paths.append(path)
          folder.labels.append(label)
          taken += 1
        } catch let e as ImageError {
          if !skipBadImages { throw ImageError(file: e.file, reason: e.reason + " (pass --skip-bad-images to skip such files)") }
          folder.skipped.append(e)
        }
      }
      if taken == 0 {
        let e = ImageError(file: dir, reason: "class '\(name)' has no .jpg, .jpeg or .png image")
        if !skipBadImages { throw e }
        folder.skipped.append(e)
      }
    }
    return folder
  }

  /// The images at `indices` (in that order), same classes.
  public func subset(_ indices: [Int]) -> ImageFolder {
    ImageFolder(root: root, classes: classes, paths: indices.map { paths[$0] }, labels: indices.map { labels[$0] }, skipped: [])
  }

  /// Reads the first bytes of `path` and checks its header (format, size limits).
  private static func checkHeader(_ path: String, decoder: ImageDecoder, buffer: inout [UInt8], limits: ImageLimits) throws {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ImageError(file: path, reason: "cannot open: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { throw ImageError(file: path, reason: "not a regular file") }
    guard st.st_size > 0 else { throw ImageError(file: path, reason: "the file is empty (0 bytes)") }
    guard Int(st.st_size) <= limits.maxFileBytes else {
      throw ImageError(file: path, reason: "the file is \(st.st_size) bytes, more than the limit of \(limits.maxFileBytes)")
    }
    let want = Swift.min(buffer.count, Int(st.st_size))
    let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, want, 0) }
    guard n == want else { throw ImageError(file: path, reason: "read failed: \(String(cString: strerror(errno)))") }
    do {
      _ = try buffer.withUnsafeBytes { try decoder.header(UnsafeRawBufferPointer(rebasing: $0[0..<n]), name: path) }
    } catch let e as ImageError where want < Int(st.st_size) && e.reason.contains("header") {
      // A header past the first 256 KB (large metadata blocks): read the whole file.
      let bytes = try ImageFile.read(path, limits: limits)
      _ = try bytes.withUnsafeBytes { try decoder.header($0, name: path) }
    }
  }

  /// Appends the image files under `dir` (recursively, following links; each directory once).
  /// Files that look like images but cannot be opened (a dangling link, a symlink loop) go to `unreadable`.
  private static func walk(_ dir: String, into files: inout [String], seen: inout Set<[UInt64]>, unreadable: inout [ImageError]) throws {
    var st = stat()
    guard stat(dir, &st) == 0 else { throw ImageError(file: dir, reason: "cannot open: \(String(cString: strerror(errno)))") }
    guard seen.insert([UInt64(st.st_dev), UInt64(st.st_ino)]).inserted else { return }  // a directory loop
    for name in try listDirectory(dir) {
      let path = join(dir, name)
      var s = stat()
      if stat(path, &s) != 0 {
        // A dangling link or a symlink loop: an error if it looks like an image, else ignored.
        if hasImageExtension(name) {
          unreadable.append(ImageError(file: path, reason: "cannot open: \(String(cString: strerror(errno)))"))
        }
        continue
      }
      if (s.st_mode & S_IFMT) == S_IFDIR {
        try walk(path, into: &files, seen: &seen, unreadable: &unreadable)
      } else if hasImageExtension(name) {
        files.append(path)
      }
    }
  }

  static func hasImageExtension(_ name: String) -> Bool {
    guard let dot = name.lastIndex(of: ".") else { return false }
    return extensions.contains(name[name.index(after: dot)...].lowercased())
  }

  static func listDirectory(_ dir: String) throws -> [String] {
    guard let d = opendir(dir) else {
      throw ImageError(file: dir, reason: "cannot read the folder: \(String(cString: strerror(errno)))")
    }
    defer { closedir(d) }
    var names = [String]()
    while let e = readdir(d) {
      let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
      if name != "." && name != ".." && !name.hasPrefix(".") { names.append(name) }
    }
    return names
  }

  static func isDirectory(_ path: String) -> Bool {
    var s = stat()
    return stat(path, &s) == 0 && (s.st_mode & S_IFMT) == S_IFDIR
  }

  static func join(_ a: String, _ b: String) -> String { a.hasSuffix("/") ? a + b : a + "/" + b }

  /// Python's string order: by Unicode code points.
  static func codePointLess(_ a: String, _ b: String) -> Bool {
    a.unicodeScalars.lexicographicallyPrecedes(b.unicodeScalars) { $0.value < $1.value }
  }
}

/// A data set folder's train and validation splits.
public struct ImageFolderSplits: Sendable {
  public var train: ImageFolder
  /// DIR/val, or the seeded share of train/ (`valSplit`), or nil when neither exists.
  public var val: ImageFolder?
  /// The fraction carved from train/ (nil when val/ exists or none was asked for).
  public var valSplit: Double?
  /// The seed of that split.
  public var splitSeed: UInt64

  /// Reads DIR/train and DIR/val (val/ with train/'s classes).
  /// - Parameters:
  ///   - valSplit: when DIR/val is absent, this fraction (0 < F < 1) of train/ becomes the
  ///     validation split: a seeded permutation of the images, its first ⌊F·n⌋ (at least 1) are
  ///     validation, both splits kept in file order. Ignored when DIR/val exists.
  /// - Throws: `ImageError`: no DIR/train, a bad val/ (a class train/ lacks), any scan error.
  public static func load(
    directory: String, valSplit: Double? = nil, seed: UInt64 = 0, skipBadImages: Bool = false, limits: ImageLimits = .standard
  ) throws -> ImageFolderSplits {
    let trainDir = ImageFolder.join(directory, "train"), valDir = ImageFolder.join(directory, "val")
    guard ImageFolder.isDirectory(trainDir) else {
      throw ImageError(file: directory, reason: "no train/ folder (expected \(trainDir)/CLASS/IMAGE.jpg)")
    }
    let train = try ImageFolder.scan(root: trainDir, skipBadImages: skipBadImages, limits: limits)
    if ImageFolder.isDirectory(valDir) {
      let valClasses = try ImageFolder.listDirectory(valDir).filter { ImageFolder.isDirectory(ImageFolder.join(valDir, $0)) }
      if let extra = valClasses.first(where: { !train.classes.contains($0) }) {
        throw ImageError(file: ImageFolder.join(valDir, extra), reason: "class '\(extra)' is not in train/")
      }
      let present = train.classes.filter { valClasses.contains($0) }
      var val = try ImageFolder.scan(root: valDir, classes: present, skipBadImages: skipBadImages, limits: limits)
      // Labels by train/'s class list (a class may be missing from val/).
      val.labels = val.labels.map { train.classes.firstIndex(of: present[$0])! }
      val.classes = train.classes
      return ImageFolderSplits(train: train, val: val, valSplit: nil, splitSeed: seed)
    }
    guard let f = valSplit else { return ImageFolderSplits(train: train, val: nil, valSplit: nil, splitSeed: seed) }
    guard f > 0 && f < 1 else { throw ImageError(file: directory, reason: "--val-split \(f) must be between 0 and 1") }
    let n = train.count
    let k = Swift.max(1, Int(f * Double(n)))
    guard k < n else { throw ImageError(file: trainDir, reason: "\(n) images are too few for a validation split of \(f)") }
    var perm = Array(0..<n)
    var rng = SeededGenerator(seed: imageSeedMix(seed, 0x5641_4C53 /* "VALS" */))
    for i in stride(from: n - 1, to: 0, by: -1) { perm.swapAt(i, rng.nextInt(below: i + 1)) }
    let valIdx = perm[0..<k].sorted(), trainIdx = perm[k...].sorted()
    var t = train.subset(trainIdx)
    t.skipped = train.skipped
    return ImageFolderSplits(train: t, val: train.subset(valIdx), valSplit: f, splitSeed: seed)
  }
}


/// Mixes words into one seed (SplitMix64's finaliser over each word).
public func imageSeedMix(_ words: UInt64...) -> UInt64 { seedMix(start: 0x243F_6A88_85A3_08D3, words) }
