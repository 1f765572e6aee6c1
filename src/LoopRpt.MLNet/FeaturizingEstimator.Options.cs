namespace LoopRpt.MLNet;

public sealed partial class LoopRptFeaturizingEstimator
{
    /// <summary>Options of the LoopRpt featurizer (<see cref="LoopRptCatalog.Featurize(LoopRptFeaturizingEstimator.Options)"/>).</summary>
    public sealed class Options
    {
        /// <summary>
        /// The featurizer's own default. The others come from the tables they belong to: the token column and exit
        /// threshold from the scorer's (<see cref="AdaptiveExitScoringTransformer.Options.Defaults"/>), the batch size from the
        /// core embedder's (<see cref="Inference.ExitStateEmbedderOptions.Defaults"/>), the context length from the core document
        /// scorer's (<see cref="Inference.DocumentScorerOptions.Defaults"/>).
        /// </summary>
        public static class Defaults
        {
            /// <summary>Feature vector column written.</summary>
            public const string OutputColumnName = "Features";
        }

        /// <summary>Token-id vector column (Vector&lt;Int32&gt; or Vector&lt;Int64&gt;). Default "Tokens", as for the scorer.</summary>
        public string TokenColumnName { get; set; } = AdaptiveExitScoringTransformer.Options.Defaults.TokenColumnName;

        /// <summary>Feature column to create (Vector&lt;Single&gt; of known length). Default "Features".</summary>
        public string OutputColumnName { get; set; } = Defaults.OutputColumnName;

        /// <summary>Exit threshold q in [0, 1]; 1 means full depth. Default 0.5, as for the scorer.</summary>
        public double ExitThreshold { get; set; } = AdaptiveExitScoringTransformer.Options.Defaults.ExitThreshold;

        /// <summary>Rows per forward pass (at least 1). Default 16, as for the core's <see cref="Inference.ExitStateEmbedder"/>.</summary>
        public int BatchSize { get; set; } = Inference.ExitStateEmbedderOptions.Defaults.BatchSize;

        /// <summary>Tokens read per row at most (at least 2; also capped by max_position_embeddings). Default 512, as for the core's document scorer.</summary>
        public int ContextLength { get; set; } = Inference.DocumentScorerOptions.Defaults.ContextLength;

        /// <summary>Device: "cpu", "cuda", "cuda:N"; null means the MLContext's GPU settings.</summary>
        public string? Device { get; set; }

        /// <summary>Fall back to the CPU when CUDA is absent; null means <c>MLContext.FallbackToCpu</c>.</summary>
        public bool? FallbackToCpu { get; set; }

        /// <summary>How <c>ml.Model.Save</c> stores the weights. Default <see cref="ModelStorage.Auto"/>.</summary>
        public ModelStorage Storage { get; set; } = ModelStorage.Auto;

        /// <summary>The LoopRpt model directory to load. Required for the loading estimator.</summary>
        public string? ModelDirectory { get; set; }

        internal LoopRptFeaturizingEstimator.Options Clone() => (LoopRptFeaturizingEstimator.Options)MemberwiseClone();

        /// <summary>The featurizer's own checks; the rest are the scorer's, whose options it runs on.</summary>
        internal void Validate()
        {
            if (string.IsNullOrWhiteSpace(OutputColumnName)) throw new ArgumentException("OutputColumnName must be given.", nameof(OutputColumnName));
            if (!(ExitThreshold is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(ExitThreshold), ExitThreshold, "ExitThreshold must lie in [0, 1].");
            ToScorerOptions().Validate();
        }

        internal AdaptiveExitScoringTransformer.Options ToScorerOptions() => new()
        {
            TokenColumnName = TokenColumnName, ExitMode = Model.ExitMode.Q(ExitThreshold), BatchSize = BatchSize, ContextLength = ContextLength,
            Device = Device, FallbackToCpu = FallbackToCpu, Storage = Storage, ModelDirectory = ModelDirectory,
        };
    }
}
