// A custom CNN, trained, checkpointed, resumed and evaluated (README: "Using the library").
import ACON
import NN
import TensorCore
import Training

let data = try DataChoice.auto.load()  // Fashion-MNIST, or a built-in synthetic set if absent
print("data: \(data.source)")
func network(seed: UInt64) -> Sequential {  // [N, C, H, W] images → [N, classes] logits
  var rng = SeededGenerator(seed: seed)
  return Sequential([
    ("conv1", Conv2D(inChannels: data.train.channels, outChannels: 16, kernelSize: 3, padding: 1, rng: &rng)),
    ("bn1", BatchNorm2D(channels: 16)),
    ("acon1", AconC(channels: 16, rng: &rng)),
    ("pool1", MaxPool2D(kernelSize: 2)),
    ("conv2", Conv2D(inChannels: 16, outChannels: 32, kernelSize: 3, stride: 2, padding: 1, rng: &rng)),
    ("acon2", MetaAconC(channels: 32, rng: &rng)),
    ("pool2", GlobalAvgPool2D()),
    ("flatten", Flatten()),
    ("fc", Linear(inFeatures: 32, outFeatures: data.train.classes, rng: &rng)),
  ])
}
var options = TrainOptions()  // Adam at 1e-3, batch 64; NaN guard, schedules, clipping: see TrainOptions
options.maxSteps = 30  // a short run; remove it to train whole epochs (options.epochs)
options.checkpoint = "runs/custom.safetensors"  // + runs/custom.state.safetensors, for --resume
options.logPath = "runs/custom.jsonl"
options.evaluateEachEpoch = false
try Trainer(model: network(seed: 0), name: "custom-cnn", options: options, train: data.train).run()

options.maxSteps = 60  // later (another process, say): resume exactly where the checkpoint is
options.resume = true
let trainer = try Trainer(model: network(seed: 1), name: "custom-cnn", options: options, train: data.train)
try trainer.run()
print("resumed at step \(trainer.resumedFromStep ?? 0), trained to step \(trainer.completedSteps)")

let model = network(seed: 2)  // a fresh network, with the checkpoint's weights
let saved = try Checkpoint.load(model, from: "runs/custom.safetensors")
let result = try evaluate(model, on: data.test.prefix(2000), topK: [3])
print("\(saved.model): test accuracy \(result.accuracy), top-3 \(result.topK[3] ?? 0), loss \(result.loss)")
