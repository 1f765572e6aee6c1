using LoopRpt.Model;
using LoopRpt.Objectives;
using LoopRpt.Training;

namespace LoopRpt.MLNet;

public sealed partial class LoopedLmTrainerEstimator
{
    /// <summary>Options of the looped-LM trainer estimator (<see cref="LoopedLmTrainerEstimator"/>).</summary>
    public sealed class Options
    {
        /// <summary>Default values, shared by the options and the catalog's optional parameters.</summary>
        public static class Defaults
        {
            /// <summary>Default of <see cref="LoopedLmTrainerEstimator.Options.TokenColumnName"/>.</summary>
            public const string TokenColumnName = "Tokens";
            /// <summary>Default of <see cref="LoopedLmTrainerEstimator.Options.Preset"/>.</summary>
            public const string Preset = "tiny";
            /// <summary>Default of <see cref="LoopedLmTrainerEstimator.Options.BatchSize"/>.</summary>
            public const int BatchSize = 8;
            /// <summary>Default of <see cref="LoopedLmTrainerEstimator.Options.SequenceLength"/>: <see cref="TrainerOptions.Defaults.SequenceLength"/>, as on every surface.</summary>
            public const int SequenceLength = TrainerOptions.Defaults.SequenceLength;
            /// <summary>Default Stage I steps of the default plan.</summary>
            public const long PretrainSteps = 200;
            /// <summary>Default Stage II steps of the default plan.</summary>
            public const long GateSteps = 50;
            /// <summary>Default of <see cref="LoopedLmTrainerEstimator.Options.DType"/>.</summary>
            public const string DType = "float32";
        }

        /// <summary>Input column of token ids (Vector of Int32 or Int64). Default "Tokens".</summary>
        public string TokenColumnName { get; set; } = Defaults.TokenColumnName;

        /// <summary>Model preset when neither <see cref="Config"/> nor <see cref="InitialModelDirectory"/> is given: tiny, small, ouro-1.4b, ouro-2.6b. Default "tiny".</summary>
        public string Preset { get; set; } = Defaults.Preset;

        /// <summary>Explicit model shape (overrides <see cref="Preset"/>; not modified).</summary>
        public OuroConfig? Config { get; set; }

        /// <summary>
        /// vocab_size of a new model; null: the vocabulary size of the LoopRpt tokenizer that produced the token column earlier
        /// in the pipeline (read from its <see cref="TokenizerAnnotations"/>), else the largest id in the column + 1 (one streaming pass).
        /// </summary>
        public int? VocabularySize { get; set; }

        /// <summary>Loop count T of a new model; null: the preset's.</summary>
        public int? Loops { get; set; }

        /// <summary>Start from this LoopRpt model directory instead of a fresh model (continued training, gate or LoopRPT stages).</summary>
        public string? InitialModelDirectory { get; set; }

        /// <summary>The stages, in order (any sequence). Default: Pretrain 200 steps, then Gate 50 steps.</summary>
        public IList<StageDescriptor> Stages { get; set; } = [StageDescriptor.Pretrain(Defaults.PretrainSteps), StageDescriptor.Gate(Defaults.GateSteps)];

        /// <summary>
        /// The stage kinds (kind → objective, its typed options and its optimizer defaults): the built-in pretrain, gate and
        /// looprpt, plus any added for <see cref="StageDescriptor.CustomKind"/>, e.g.
        /// <c>ObjectiveKinds.Add(new ObjectiveKind&lt;MyOptions&gt;("mine", (o, steps) =&gt; new MyObjective(o)))</c>: the one
        /// extension point, the same registry type as hosting's <c>AddStageKind</c>. Default: a new registry of the built-in kinds.
        /// </summary>
        public ObjectiveKindRegistry ObjectiveKinds { get; set; } = new();

        /// <summary>Sequences per micro-batch (B). Default 8.</summary>
        public int BatchSize { get; set; } = Defaults.BatchSize;

        /// <summary>Tokens per training sequence (S). Default 64 (<see cref="TrainerOptions.Defaults.SequenceLength"/>).</summary>
        public int SequenceLength { get; set; } = Defaults.SequenceLength;

        /// <summary>Id appended after every row when packing (null: none; the tokenizer's BOS already separates documents).</summary>
        public int? SeparatorTokenId { get; set; }

        /// <summary>"cpu", "cuda" or "cuda:N"; null: <c>cuda:{MLContext.GpuDeviceId}</c> when set, else "cpu".</summary>
        public string? Device { get; set; }

        /// <summary>Fall back to the CPU when CUDA is unavailable; null: <c>MLContext.FallbackToCpu</c>.</summary>
        public bool? FallbackToCpu { get; set; }

        /// <summary>"float32" (default) or "bfloat16".</summary>
        public string DType { get; set; } = Defaults.DType;

        /// <summary>Seed of weights, data order and objective noise; null: drawn from the MLContext's seeded host.</summary>
        public long? Seed { get; set; }

        /// <summary>Checkpoint root (null: none).</summary>
        public string? CheckpointDirectory { get; set; }

        /// <summary>Steps between checkpoints; 0: only at the end of each stage.</summary>
        public int CheckpointEvery { get; set; }

        /// <summary>Checkpoints kept. Default 2.</summary>
        public int KeepCheckpoints { get; set; } = TrainerOptions.Defaults.KeepCheckpoints;

        /// <summary>Continue from the latest checkpoint in <see cref="CheckpointDirectory"/> (same plan required).</summary>
        public bool Resume { get; set; }

        /// <summary>Steps between progress reports (to MLContext.Log and <see cref="Progress"/>). Default 10.</summary>
        public int LogEvery { get; set; } = TrainerOptions.Defaults.LogEvery;

        /// <summary>
        /// Loss-spike rule (<see cref="TrainerOptions.SpikeFactor"/>): training stops with a <see cref="TrainingDivergedException"/>
        /// when the logged loss is above <c>max(SpikeFactor × m, m + 1)</c>, m its running median, for <see cref="SpikePatience"/>
        /// reports in a row; the last checkpoint whose loss was sane is kept. 0 turns the rule off. Default 3.
        /// </summary>
        public double SpikeFactor { get; set; } = TrainerOptions.Defaults.SpikeFactor;

        /// <summary>Logged losses in a row above the spike threshold that stop training. Default 3.</summary>
        public int SpikePatience { get; set; } = TrainerOptions.Defaults.SpikePatience;

        /// <summary>Sane logged losses whose median is the spike rule's baseline. Default 20.</summary>
        public int SpikeWindow { get; set; } = TrainerOptions.Defaults.SpikeWindow;

        /// <summary>Receives progress reports (also written to MLContext.Log as parseable key=value lines).</summary>
        public IProgress<TrainingProgress>? Progress { get; set; }

        /// <summary>Stops training (see <see cref="OnCancel"/>).</summary>
        public CancellationToken CancellationToken { get; set; }

        /// <summary>Cancellation: checkpoint and throw (default), or checkpoint and return the partially trained scorer.</summary>
        public CancellationBehavior OnCancel { get; set; } = CancellationBehavior.CheckpointAndThrow;

        /// <summary>Save the trained model to this LoopRpt model directory (the scorer then references it; needed for large models).</summary>
        public string? ModelDirectory { get; set; }

        /// <summary>Tokenizer description stored in the model's meta.json; null: that of the tokenizer that produced the token column earlier in the pipeline (<see cref="TokenizerAnnotations"/>), if any.</summary>
        public System.Text.Json.Nodes.JsonObject? TokenizerDescription { get; set; }

        /// <summary>Options of the returned scorer (exit mode, batch size, ...); its token column is this trainer's.</summary>
        public AdaptiveExitScoringTransformer.Options Scorer { get; set; } = new();

        internal void Validate()
        {
            if (string.IsNullOrWhiteSpace(TokenColumnName)) throw new ArgumentException("TokenColumnName must be given.", nameof(TokenColumnName));
            if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be at least 1.");
            if (SequenceLength < 1) throw new ArgumentOutOfRangeException(nameof(SequenceLength), SequenceLength, "SequenceLength must be at least 1.");
            if (VocabularySize is < 1) throw new ArgumentOutOfRangeException(nameof(VocabularySize), VocabularySize, "VocabularySize must be at least 1.");
            if (Loops is < 1) throw new ArgumentOutOfRangeException(nameof(Loops), Loops, "Loops must be at least 1.");
            if (DType is not ("float32" or "bfloat16")) throw new ArgumentOutOfRangeException(nameof(DType), DType, "DType must be 'float32' or 'bfloat16'.");
            ArgumentNullException.ThrowIfNull(ObjectiveKinds, nameof(ObjectiveKinds));
            if (Stages is null || Stages.Count == 0) throw new ArgumentException("Stages must hold at least one stage.", nameof(Stages));
            for (int i = 0; i < Stages.Count; i++)
            {
                var s = Stages[i] ?? throw new ArgumentException($"Stages[{i}] is null.", nameof(Stages));
                var at = $"Stages[{i}] ({s.Kind})";
                if (s.Epochs is { } e && !(e > 0)) throw new ArgumentOutOfRangeException(nameof(StageDescriptor.Epochs), e, $"{at}: Epochs must be positive.");
                if (s.Steps == 0 && s.Epochs is null) throw new ArgumentOutOfRangeException(nameof(StageDescriptor.Steps), 0, $"{at}: give Steps > 0 or Epochs.");
                s.ToDefinition(s.Steps).Validate(at);
                var kind = s.KindName ?? throw new ArgumentException(
                    $"{at} is a Custom stage without a CustomKind: name a kind registered in {nameof(ObjectiveKinds)}.", nameof(StageDescriptor.CustomKind));
                ObjectiveKinds.Get(kind, at).CheckOptionsType(s.ObjectiveOptions, at);
            }
            ToTrainerOptions().Validate();
            if (ModelDirectory is not null && Checkpoints.ModelDirectory.ReplaceProblem(ModelDirectory) is { } problem)
                throw new ArgumentException($"ModelDirectory: {problem}", nameof(ModelDirectory));
            if (InitialModelDirectory is not null && !Directory.Exists(InitialModelDirectory))
                throw new DirectoryNotFoundException($"InitialModelDirectory '{InitialModelDirectory}' does not exist.");
            ArgumentNullException.ThrowIfNull(Scorer, nameof(Scorer));
            Scorer.Validate();
        }

        /// <summary>The core trainer options these bind to (checked by <see cref="TrainerOptions.Validate"/>); Fit adds its seed, meta and progress.</summary>
        internal TrainerOptions ToTrainerOptions() => new()
        {
            LogEvery = LogEvery, CheckpointDirectory = CheckpointDirectory, CheckpointEvery = CheckpointEvery, KeepCheckpoints = KeepCheckpoints,
            Resume = Resume, OnCancel = OnCancel, SpikeFactor = SpikeFactor, SpikePatience = SpikePatience, SpikeWindow = SpikeWindow,
        };

        internal Options Clone()
        {
            var c = (Options)MemberwiseClone();
            c.Stages = Stages.Select(s => s.Clone()).ToList();
            c.Scorer = Scorer.Clone();
            c.Config = Config?.Clone();
            c.ObjectiveKinds = ObjectiveKinds.Clone();
            return c;
        }
    }
}
