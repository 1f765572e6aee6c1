using System.CommandLine;
using System.Globalization;
using LoopRpt.Cli.Input;
using LoopRpt.Evaluation;

namespace LoopRpt.Cli.Commands;

/// <summary>Options shared by several verbs, created fresh for each command.</summary>
internal static class CommonOptions
{
    /// <summary>A verb taking <paramref name="options"/> (a verb's option set) whose action <paramref name="run"/> returns the exit code.</summary>
    public static Command Verb(string name, string description, IEnumerable<Option> options, Func<ParseResult, int> run)
    {
        var command = new Command(name, description);
        foreach (var option in options) command.Add(option);
        command.SetAction(run);
        return command;
    }

    public static Option<string[]> Input(bool required = true) => new("--input", "-i")
    {
        Description = "Text file (one document per line), .tsv/.csv file (see --column) or folder of .txt files; repeatable.",
        Required = required, Arity = required ? ArgumentArity.OneOrMore : ArgumentArity.ZeroOrMore,
    };

    public static Option<string> Column() => new("--column")
    {
        Description = "Column holding the text in .tsv/.csv inputs (header row required).", DefaultValueFactory = _ => "text",
    };

    public static Option<DocumentSplit> Documents() => new("--documents")
    {
        Description = "How plain-text files are cut into documents: Lines (one per line) or Files (one per file).",
        DefaultValueFactory = _ => DocumentSplit.Lines,
    };

    public static Option<string> Model(bool required = true) => new("--model", "-m")
    {
        Description = "Model directory: LoopRpt (config.json, model.safetensors, meta.json), a checkpoint folder (its latest step), or a Hugging Face Ouro directory.",
        Required = required,
    };

    public static Option<string> Device() => new("--device")
    {
        Description = "cpu, cuda or cuda:N (CUDA needs a CUDA build of TorchSharp; see README).", DefaultValueFactory = _ => "cpu",
    };

    public static Option<string> DType() => new("--dtype") { Description = "float32 or bfloat16.", DefaultValueFactory = _ => "float32" };

    public static Option<string> BFloat16Compute() => new("--bf16-compute")
    {
        Description = "How bfloat16 weights compute on a CPU: auto (float32 compute from bfloat16 storage unless the CPU has AVX-512 BF16; `looprpt env` shows the choice), native (libtorch's bfloat16 kernels) or float32.",
        DefaultValueFactory = _ => "auto",
    };

    public static Option<int> Threads(int @default = 0) => new("--threads")
    {
        Description = $"libtorch intra-op threads; 0: automatic — 1 for models under {Models.ThreadPolicy.SmallModelParameters / 1_000_000}M parameters, else the physical cores minus the busy ones (load average); `looprpt env` shows the choice.",
        DefaultValueFactory = _ => @default,
    };

    public static Option<string?> TokenizerFile() => new("--tokenizer")
    {
        Description = "Tokenizer file to use instead of the model's own: a LoopRpt tokenizer file (`looprpt tokenizer`) or a Hugging Face tokenizer.json.",
    };

    public static Option<string?> Ids() => new("--ids")
    {
        Description = "Token ids instead of text, comma-separated (e.g. 1,5,9); used as given (no BOS is added), so any checkpoint works without a tokenizer.",
    };

    /// <summary>Parses <c>--ids</c>: comma- or space-separated non-negative integers below <paramref name="vocabulary"/>.</summary>
    public static int[] ParseIds(string text, int vocabulary, string option = "--ids")
    {
        var parts = text.Split([',', ' '], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) throw CliException.Usage($"{option} needs at least one token id.");
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out ids[i]))
                throw CliException.Usage($"{option}: '{parts[i]}' is not a token id (a non-negative integer).");
            if (ids[i] >= vocabulary) throw CliException.Usage($"{option}: token id {ids[i]} is outside the model's vocabulary [0, {vocabulary}).");
        }
        return ids;
    }

    public static Option<int> BatchSize(int @default) => new("--batch-size") { Description = "Sequences per batch.", DefaultValueFactory = _ => @default };

    public static Option<int> SequenceLength(int @default) => new("--seq-len") { Description = "Tokens per sequence window.", DefaultValueFactory = _ => @default };

    public static Option<string> Thresholds(string @default) => new("--q")
    {
        Description = "Q-exit thresholds, comma-separated, each in [0, 1] (1 = always the last loop).", DefaultValueFactory = _ => @default,
    };

    public static Option<string> Pass() => new("--pass")
    {
        Description = "Where the Q-exit figures come from: full (every loop computed, each q's exit selected afterwards: the paper's "
                      + "protocol, one pass) or adaptive (the compute-saving scorer, exited tokens stop looping; one pass per q).",
        DefaultValueFactory = _ => "full",
    };

    /// <summary>Parses <c>--pass</c>: full or adaptive.</summary>
    public static EvaluationPass ParsePass(string text) => text.Trim().ToLowerInvariant() switch
    {
        "full" or "full-depth" => EvaluationPass.FullDepth,
        "adaptive" => EvaluationPass.Adaptive,
        _ => throw CliException.Usage($"--pass: '{text}' is not a pass; expected full or adaptive."),
    };

    public static Option<string> Buckets() => new("--buckets")
    {
        Description = "The nested Easy ⊇ Medium ⊇ Hard buckets by the base model's last-step entropy H: entropy:A,B,C (H above A, B, C nats; "
                      + "the method's 0.5,1,1.5 by default) or top:A,B,C (the A, B, C % of tokens with the highest H; `top` alone: 50,30,20, "
                      + "LoopRPT's hard tokens being the top 20 %). Use top for small models, where most tokens are above 0.5 nats.",
        DefaultValueFactory = _ => EntropyBuckets.Published.ToString(),
    };

    /// <summary>Parses <c>--buckets</c>; a malformed value is a usage error naming the option.</summary>
    public static EntropyBuckets ParseBuckets(string text)
    {
        try
        {
            return EntropyBuckets.Parse(text);
        }
        catch (FormatException e)
        {
            throw CliException.Usage($"--buckets: {e.Message}");
        }
    }

    /// <summary>Parses a comma list of Q-exit thresholds in [0, 1].</summary>
    public static double[] ParseThresholds(string text, string option = "--q")
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) throw CliException.Usage($"{option} needs at least one threshold in [0, 1].");
        return parts.Select(p => double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture, out var q) && q is >= 0 and <= 1
            ? q : throw CliException.Usage($"{option}: '{p}' is not a number in [0, 1].")).ToArray();
    }

    /// <summary>
    /// Checks trainer settings bound from the command line with the core's one check (<see cref="LoopRpt.Training.TrainerOptions.Problems"/>);
    /// the first problem is a usage error naming its option (<paramref name="optionOf"/>: property name → option).
    /// </summary>
    public static LoopRpt.Training.TrainerOptions Checked(LoopRpt.Training.TrainerOptions options, Func<string?, string> optionOf)
    {
        if (options.Problems().FirstOrDefault() is { } e)
            throw CliException.Usage($"{optionOf(e.ParamName)}: {e.Message.Split(" (Parameter '")[0]}");
        return options;
    }

    public static int AtLeast(int value, int min, string option)
        => value >= min ? value : throw CliException.Usage($"{option} must be at least {min}, got {value}.");

    public static double Positive(double value, string option)
        => value > 0 && double.IsFinite(value) ? value : throw CliException.Usage($"{option} must be a positive number, got {value.ToString(CultureInfo.InvariantCulture)}.");

    /// <summary>Refuses a window longer than the model's context (max_position_embeddings), before any work.</summary>
    public static int FitsContext(int sequenceLength, int context, string option = "--seq-len")
        => sequenceLength <= context ? sequenceLength
            : throw CliException.Usage($"{option} {sequenceLength} exceeds the model's context (max_position_embeddings = {context}); use {option} {context} or less.");

    /// <summary>Creates the parent folder of <paramref name="path"/>.</summary>
    public static void EnsureParent(string path)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
    }
}
