using LoopRpt.Model;

namespace LoopRpt.MLNet;

public sealed partial class AdaptiveExitScoringTransformer
{
    /// <summary>Options of the adaptive-exit scorer (<see cref="AdaptiveExitScoringTransformer"/>).</summary>
    public sealed class Options
    {
        /// <summary>Default values, shared by the options and the catalog's optional parameters.</summary>
        public static class Defaults
        {
            /// <summary>Default of <see cref="AdaptiveExitScoringTransformer.Options.TokenColumnName"/>.</summary>
            public const string TokenColumnName = "Tokens";
            /// <summary>Default Q-exit threshold q of <see cref="AdaptiveExitScoringTransformer.Options.ExitMode"/>.</summary>
            public const double ExitThreshold = 0.5;
            /// <summary>Default of <see cref="AdaptiveExitScoringTransformer.Options.BatchSize"/>.</summary>
            public const int BatchSize = Inference.DocumentScorerOptions.Defaults.BatchSize;
            /// <summary>Default of <see cref="AdaptiveExitScoringTransformer.Options.ContextLength"/>.</summary>
            public const int ContextLength = Inference.DocumentScorerOptions.Defaults.ContextLength;
            /// <summary>Largest weights (bytes) that <see cref="ModelStorage.Auto"/> embeds.</summary>
            public const long MaxEmbeddedBytes = 100L * 1024 * 1024;
        }

        /// <summary>Input column of token ids: a vector of Int32 or Int64 (any length). Default "Tokens".</summary>
        public string TokenColumnName { get; set; } = Defaults.TokenColumnName;

        /// <summary>How each token's exit step is chosen. Default Q-exit with q = 0.5.</summary>
        public ExitMode ExitMode { get; set; } = ExitMode.Q(Defaults.ExitThreshold);

        /// <summary>Sequences (windows) per forward pass. Default 8.</summary>
        public int BatchSize { get; set; } = Defaults.BatchSize;

        /// <summary>Longest window scored at once; longer rows are windowed (see remarks of the transformer). Default 512, capped by the model's max_position_embeddings.</summary>
        public int ContextLength { get; set; } = Defaults.ContextLength;

        /// <summary>
        /// Compute per-step correctness (needed for per-step accuracy in Evaluate). This runs every loop for every token plus one
        /// LM-head pass per loop. Default false: tokens stop looping at their exit, so compute is really saved
        /// (docs/adaptive-exit.md); set true for evaluation.
        /// </summary>
        public bool PerStepStatistics { get; set; }

        /// <summary>"cpu", "cuda" or "cuda:N"; null: <c>cuda:{MLContext.GpuDeviceId}</c> when the MLContext sets one, else "cpu".</summary>
        public string? Device { get; set; }

        /// <summary>Fall back to the CPU when CUDA is unavailable; null: <c>MLContext.FallbackToCpu</c>.</summary>
        public bool? FallbackToCpu { get; set; }

        /// <summary>Prefix of every output column name (to score with two models in one pipeline). Default "".</summary>
        public string OutputColumnPrefix { get; set; } = "";

        /// <summary>How <c>ml.Model.Save</c> stores the weights. Default <see cref="ModelStorage.Auto"/>.</summary>
        public ModelStorage Storage { get; set; } = ModelStorage.Auto;

        /// <summary>A LoopRpt model directory to load (the loading estimator), or where a trained model was saved.</summary>
        public string? ModelDirectory { get; set; }

        internal Options Clone() => (Options)MemberwiseClone();

        internal void Validate(OuroConfig? config = null)
        {
            if (string.IsNullOrWhiteSpace(TokenColumnName)) throw new ArgumentException("TokenColumnName must be given.", nameof(TokenColumnName));
            ArgumentNullException.ThrowIfNull(ExitMode, nameof(ExitMode));
            if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be at least 1.");
            if (ContextLength < 2) throw new ArgumentOutOfRangeException(nameof(ContextLength), ContextLength, "ContextLength must be at least 2.");
            OutputColumnPrefix ??= "";
            if (config is not null && ExitMode.Kind == ExitKind.FixedStep && ExitMode.Step >= config.TotalUtSteps)
                throw new ArgumentOutOfRangeException(nameof(ExitMode), ExitMode.Step,
                    $"The fixed exit step {ExitMode.Step} (0-based) is beyond the model's {config.TotalUtSteps} loops; expected 0 to {config.TotalUtSteps - 1}.");
        }
    }
}
