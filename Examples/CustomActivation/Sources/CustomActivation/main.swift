// Trains a small network with the FixedBetaAconC activation for a few steps on the synthetic
// shapes and prints its state_dict names: p1 and p2 are learned, β is not saved.
import FixedBetaAcon
import NN
import TensorCore
import Training

var rng = SeededGenerator(seed: 0)
let model = Sequential([
  ("conv1", Conv2D(inChannels: 1, outChannels: 16, kernelSize: 3, stride: 2, padding: 1, rng: &rng)),
  ("acon1", FixedBetaAconC(channels: 16, beta: 1, rng: &rng)),
  ("conv2", Conv2D(inChannels: 16, outChannels: 32, kernelSize: 3, stride: 2, padding: 1, rng: &rng)),
  ("acon2", FixedBetaAconC(channels: 32, beta: 1, rng: &rng)),
  ("pool", GlobalAvgPool2D()),
  ("flatten", Flatten()),
  ("fc", Linear(inFeatures: 32, outFeatures: 10, rng: &rng)),
])
print(model.stateDictNames().joined(separator: ", "))
let (train, test) = SyntheticShapes.splits(trainCount: 4096, testCount: 256, height: 16, width: 16, seed: 1)
var options = TrainOptions()
options.maxSteps = 100
options.learningRate = 3e-3
let trainer = try Trainer(model: model, name: "fixed-beta-acon", options: options, train: train, test: test)
try trainer.run()
print("loss \(trainer.losses.first ?? 0) → \(trainer.losses.last ?? 0), test accuracy \(trainer.epochs.last?.testAccuracy ?? 0)")
