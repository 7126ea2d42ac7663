// Fine-tuning from a checkpoint: pretrain a small ACON network on the ten synthetic shapes, save
// it, then give a fresh copy a new head for a five-class task, load every backbone weight from the
// checkpoint (strict: false skips the old head) and train on with a lower learning rate.
import ACON
import NN
import TensorCore
import Training

func network(classes: Int, seed: UInt64) -> Sequential {
  var rng = SeededGenerator(seed: seed)
  return Sequential([
    ("conv1", Conv2D(inChannels: 1, outChannels: 16, kernelSize: 3, padding: 1, rng: &rng)),
    ("bn1", BatchNorm2D(channels: 16)),
    ("acon1", AconC(channels: 16, rng: &rng)),
    ("pool1", MaxPool2D(kernelSize: 2)),
    ("conv2", Conv2D(inChannels: 16, outChannels: 32, kernelSize: 3, stride: 2, padding: 1, rng: &rng)),
    ("acon2", AconC(channels: 32, rng: &rng)),
    ("pool2", GlobalAvgPool2D()),
    ("flatten", Flatten()),
    ("head", Linear(inFeatures: 32, outFeatures: classes, rng: &rng)),
  ])
}

// 1. Pretrain on ten classes and checkpoint.
let (pretrainSet, _) = SyntheticShapes.splits(trainCount: 4096, testCount: 256, height: 16, width: 16, seed: 1)
var options = TrainOptions()
options.maxSteps = 120
options.learningRate = 3e-3
options.evaluateEachEpoch = false
options.checkpoint = "runs/pretrained.safetensors"
try Trainer(model: network(classes: 10, seed: 0), name: "shapes-10", options: options, train: pretrainSet).run()

// 2. A five-class task: the first five shapes, drawn with another seed.
let (train5, test5) = SyntheticShapes.splits(trainCount: 1024, testCount: 256, height: 16, width: 16, classes: 5, seed: 7)
let model = network(classes: 5, seed: 1)
let file = try SafetensorsFile.read(path: "runs/pretrained.safetensors")
let (missing, unexpected) = try model.loadStateDict(file.tensors.filter { !$0.key.hasPrefix("head.") }, strict: false)
print("loaded the backbone; new: \(missing.joined(separator: ", ")); skipped: \(unexpected.count)")
let before = try evaluate(model, on: test5)

// 3. Fine-tune every layer at a third of the rate (or pass an optimizer over the head's
//    parameters only, model["head"]!.namedParameters(prefix: "head."), to freeze the backbone).
var fine = TrainOptions()
fine.maxSteps = 40
fine.learningRate = 1e-3
fine.checkpoint = "runs/finetuned.safetensors"
let trainer = try Trainer(model: model, name: "shapes-5-finetuned", options: fine, train: train5, test: test5)
try trainer.run()
let after = try evaluate(model, on: test5)
print("five-class test accuracy: \(before.accuracy) before fine-tuning, \(after.accuracy) after")
