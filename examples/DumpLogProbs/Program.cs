// DumpLogProbs: per-step next-token log-probabilities and exit probabilities of a checkpoint, as JSON (docs/interop.md).
//
//   dotnet run --project examples/DumpLogProbs -- MODEL_DIR [options] ID ID ID ...
//
// MODEL_DIR is a Hugging Face Ouro directory (config.json + model.safetensors or shards + index) or a LoopRpt model
// directory. Options: --dtype float32|bfloat16, --q Q (Q-exit threshold; default the config's early_exit_threshold, else 1),
// --loops T, --text "..." (encode with the directory's tokenizer.json instead of giving ids), --out FILE,
// --chatml (use <|im_start|>/<|im_end|> as BOS/EOS when the config has bos = eos), --bos ID / --eos ID (override).
// Warnings (e.g. the known-wrong BOS/EOS ids of released Ouro configs) go to stderr; the JSON goes to stdout.
using System.Globalization;
using LoopRpt.Interop;
using static TorchSharp.torch;

if (args.Length < 2 || args.Contains("--help") || args.Contains("-h"))
{
    Console.Error.WriteLine("usage: DumpLogProbs MODEL_DIR [--dtype float32|bfloat16] [--q Q] [--loops T] [--out FILE] [--chatml] [--bos ID] [--eos ID] (--text TEXT | ID ...)");
    return args.Contains("--help") || args.Contains("-h") ? 0 : 2;
}

string directory = args[0];
var dtype = ScalarType.Float32;
double? q = null;
int? loops = null, bos = null, eos = null;
bool chatMl = false;
string? text = null, outPath = null;
var ids = new List<int>();
try
{
    for (int i = 1; i < args.Length; i++)
    {
        string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"Option '{args[i]}' needs a value.");
        switch (args[i])
        {
            case "--dtype":
                var d = Next();
                dtype = d switch
                {
                    "float32" or "f32" => ScalarType.Float32,
                    "bfloat16" or "bf16" => ScalarType.BFloat16,
                    _ => throw new ArgumentException($"--dtype must be float32 or bfloat16, got '{d}'."),
                };
                break;
            case "--q": q = double.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--loops": loops = int.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--text": text = Next(); break;
            case "--out": outPath = Next(); break;
            case "--chatml": chatMl = true; break;
            case "--bos": bos = int.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--eos": eos = int.Parse(Next(), CultureInfo.InvariantCulture); break;
            default:
                if (!int.TryParse(args[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out var id))
                    throw new ArgumentException($"'{args[i]}' is neither an option nor a token id.");
                ids.Add(id);
                break;
        }
    }

    using var checkpoint = OuroCheckpoint.Load(directory, new OuroLoadOptions
    {
        DType = dtype, UseChatMlSpecialTokens = chatMl, BosTokenId = bos, EosTokenId = eos,
        OnWarning = w => Console.Error.WriteLine("warning: " + w),
    });
    if (text is not null)
    {
        var tokenizer = checkpoint.Tokenizer ?? throw new ArgumentException($"--text needs a tokenizer.json in '{directory}'.");
        ids.AddRange(tokenizer.Encode(text));
    }
    if (ids.Count == 0) throw new ArgumentException("Give token ids or --text.");
    var report = LogProbReport.Compute(checkpoint.Model, ids, q, loops, checkpoint.Directory);
    var json = report.ToJson();
    if (outPath is null) Console.WriteLine(json);
    else File.WriteAllText(outPath, json + Environment.NewLine);
    return 0;
}
catch (Exception e) when (e is ArgumentException or FormatException or IOException or NotSupportedException or InvalidOperationException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}
