using System.Text.Json;
using System.Text.Json.Serialization;
using LoopRpt.MLNet.Persistence;
using LoopRpt.Tokenization;

namespace LoopRpt.MLNet;

/// <summary>Where the tokenizer estimator gets its tokenizer.</summary>
public enum TokenizerSource
{
    /// <summary>Learn a byte-level BPE vocabulary from the input column at fit time (<see cref="ByteLevelBpeTrainer"/>).</summary>
    TrainBpe,
    /// <summary>A pretrained tiktoken encoding (<see cref="TokenizingEstimator.Options.TiktokenEncoding"/>).</summary>
    Tiktoken,
    /// <summary><see cref="TokenizingEstimator.Options.VocabFile"/> + <see cref="TokenizingEstimator.Options.MergesFile"/>.</summary>
    BpeFiles,
    /// <summary><see cref="TokenizingEstimator.Options.SentencePieceModelFile"/>.</summary>
    SentencePiece,
    /// <summary>An existing <see cref="TokenizingEstimator.Options.Tokenizer"/>.</summary>
    Existing,
}

public sealed partial class TokenizingEstimator
{
    /// <summary>Options of the tokenizer estimator (<see cref="TokenizingEstimator"/>).</summary>
    public sealed class Options
    {
        /// <summary>Default values, shared by the options and the catalog's optional parameters.</summary>
        public static class Defaults
        {
            /// <summary>Default of <see cref="TokenizingEstimator.Options.InputColumnName"/>.</summary>
            public const string InputColumnName = "Text";
            /// <summary>Default of <see cref="TokenizingEstimator.Options.OutputColumnName"/>.</summary>
            public const string OutputColumnName = "Tokens";
            /// <summary>Default of <see cref="TokenizingEstimator.Options.Source"/>.</summary>
            public const TokenizerSource Source = TokenizerSource.TrainBpe;
            /// <summary>Default of <see cref="TokenizingEstimator.Options.VocabularySize"/>.</summary>
            public const int VocabularySize = ByteLevelBpeTrainerOptions.Defaults.VocabularySize;
            /// <summary>Default of <see cref="TokenizingEstimator.Options.TiktokenEncoding"/>.</summary>
            public const string TiktokenEncoding = "gpt2";
            /// <summary>Default of <see cref="TokenizingEstimator.Options.AddBos"/>.</summary>
            public const bool AddBos = true;
            /// <summary>Default of <see cref="TokenizingEstimator.Options.AddEos"/>.</summary>
            public const bool AddEos = false;
        }

        /// <summary>Text column to tokenize. Default "Text".</summary>
        public string InputColumnName { get; set; } = Defaults.InputColumnName;

        /// <summary>Output column: a variable-length vector of Int32 token ids. Default "Tokens".</summary>
        public string OutputColumnName { get; set; } = Defaults.OutputColumnName;

        /// <summary>Where the tokenizer comes from. Default: train a byte-level BPE on the data.</summary>
        public TokenizerSource Source { get; set; } = Defaults.Source;

        /// <summary>TrainBpe: vocabulary size (special tokens and 256 bytes included). Default 1024.</summary>
        public int VocabularySize { get; set; } = Defaults.VocabularySize;

        /// <summary>TrainBpe: least pair frequency merged. Default 2.</summary>
        public int MinFrequency { get; set; } = ByteLevelBpeTrainerOptions.Defaults.MinFrequency;

        /// <summary>TrainBpe: special tokens (ids 0, 1, ...). Default <c>&lt;|endoftext|&gt;</c> (the BOS/EOS/separator).</summary>
        public IList<string> SpecialTokens { get; set; } = [ByteLevelBpeTrainerOptions.Defaults.EndOfText];

        /// <summary>TrainBpe: rows read to learn the vocabulary (0: all). Default 0.</summary>
        public long MaxTrainingRows { get; set; }

        /// <summary>Tiktoken: gpt2 (default), cl100k_base, o200k_base (the latter two need their Microsoft.ML.Tokenizers.Data package).</summary>
        public string TiktokenEncoding { get; set; } = Defaults.TiktokenEncoding;

        /// <summary>BpeFiles: path of vocab.json.</summary>
        public string? VocabFile { get; set; }

        /// <summary>BpeFiles: path of merges.txt.</summary>
        public string? MergesFile { get; set; }

        /// <summary>SentencePiece: path of the .model file.</summary>
        public string? SentencePieceModelFile { get; set; }

        /// <summary>Existing: the tokenizer to use.</summary>
        public LoopRptTokenizer? Tokenizer { get; set; }

        /// <summary>Prepend the BOS (or end-of-text) id, so the first word is scored too. Default true.</summary>
        public bool AddBos { get; set; } = Defaults.AddBos;

        /// <summary>Append the EOS (or end-of-text) id. Default false.</summary>
        public bool AddEos { get; set; } = Defaults.AddEos;

        /// <summary>Longest output (BOS/EOS included); 0: unlimited. Default 0.</summary>
        public int MaxLength { get; set; }

        /// <summary>Which tokens a too-long text keeps. Default <see cref="OverflowMode.KeepStart"/> (truncation).</summary>
        public OverflowMode Overflow { get; set; } = OverflowMode.KeepStart;

        internal void Validate()
        {
            if (string.IsNullOrWhiteSpace(InputColumnName)) throw new ArgumentException("InputColumnName must be given.", nameof(InputColumnName));
            if (string.IsNullOrWhiteSpace(OutputColumnName)) throw new ArgumentException("OutputColumnName must be given.", nameof(OutputColumnName));
            if (MaxLength < 0) throw new ArgumentOutOfRangeException(nameof(MaxLength), MaxLength, "MaxLength must be non-negative (0 means unlimited).");
            if (MaxLength > 0 && MaxLength < (AddBos ? 1 : 0) + (AddEos ? 1 : 0) + 1)
                throw new ArgumentOutOfRangeException(nameof(MaxLength), MaxLength, "MaxLength must leave room for at least one text token after BOS/EOS.");
            if (MaxTrainingRows < 0) throw new ArgumentOutOfRangeException(nameof(MaxTrainingRows), MaxTrainingRows, "MaxTrainingRows must be non-negative (0 means all).");
            switch (Source)
            {
                case TokenizerSource.TrainBpe:
                    new ByteLevelBpeTrainerOptions { VocabularySize = VocabularySize, MinFrequency = MinFrequency, SpecialTokens = SpecialTokens }.Validate();
                    break;
                case TokenizerSource.Tiktoken when string.IsNullOrWhiteSpace(TiktokenEncoding):
                    throw new ArgumentException("TiktokenEncoding must be given (gpt2, cl100k_base, o200k_base).", nameof(TiktokenEncoding));
                case TokenizerSource.BpeFiles when VocabFile is null || MergesFile is null:
                    throw new ArgumentException("Source BpeFiles needs VocabFile and MergesFile.", VocabFile is null ? nameof(VocabFile) : nameof(MergesFile));
                case TokenizerSource.SentencePiece when SentencePieceModelFile is null:
                    throw new ArgumentException("Source SentencePiece needs SentencePieceModelFile.", nameof(SentencePieceModelFile));
                case TokenizerSource.Existing when Tokenizer is null:
                    throw new ArgumentException("Source Existing needs Tokenizer.", nameof(Tokenizer));
            }
        }

        internal TokenizingEstimator.Options Clone()
        {
            var c = (TokenizingEstimator.Options)MemberwiseClone();
            c.SpecialTokens = SpecialTokens?.ToList() ?? [];
            return c;
        }
    }
}

/// <summary>
/// The tokenizer transform's saved state (JSON in a ValueMapping). Format <c>looprpt-mlnet-tokenizer</c>, history:
/// version 1 — <c>spec</c> (<see cref="TokenizerSpec"/>), <c>add_bos</c>, <c>add_eos</c>, <c>max_length</c>, <c>overflow</c>.
/// </summary>
internal sealed class TokenizerState : SavedState
{
    public const string FormatName = "looprpt-mlnet-tokenizer";
    public const int CurrentVersion = 1;

    public TokenizerState() : base(FormatName, CurrentVersion) { }

    [JsonPropertyName("spec")] public TokenizerSpec Spec { get; set; } = new();
    [JsonPropertyName("add_bos")] public bool AddBos { get; set; }
    [JsonPropertyName("add_eos")] public bool AddEos { get; set; }
    [JsonPropertyName("max_length")] public int MaxLength { get; set; }
    [JsonPropertyName("overflow")] public OverflowMode Overflow { get; set; }

    [JsonIgnore] private LoopRptTokenizer? _tokenizer;

    [JsonIgnore] public LoopRptTokenizer Tokenizer => _tokenizer ??= LoopRptTokenizer.Create(Spec);

    public static TokenizerState For(LoopRptTokenizer tokenizer, TokenizingEstimator.Options o)
    {
        var s = new TokenizerState { Spec = tokenizer.Spec, AddBos = o.AddBos, AddEos = o.AddEos, MaxLength = o.MaxLength, Overflow = o.Overflow };
        s._tokenizer = tokenizer;
        return s;
    }

    public static TokenizerState Parse(string json) => Parse<TokenizerState>(json, FormatName, CurrentVersion, "tokenizer");

    public int[] Encode(string? text) => Tokenizer.Encode(text, AddBos, AddEos, MaxLength, Overflow);
}
