using LoopRpt.Interop;
using LoopRpt.Model;
using LoopRpt.Tokenization;

namespace LoopRpt.Cli.Models;

/// <summary>Text ↔ token ids for a loaded model: the LoopRpt tokenizer stored in meta.json, or an HF tokenizer.json.</summary>
public sealed class TextCodec
{
    private readonly Func<string, int[]> _encode;
    private readonly Func<IEnumerable<int>, string> _decode;

    private TextCodec(Func<string, int[]> encode, Func<IEnumerable<int>, string> decode, int? bos, int? eos, string description)
    {
        _encode = encode;
        _decode = decode;
        BosTokenId = bos;
        EosTokenId = eos;
        Description = description;
    }

    /// <summary>The id prepended to every document (so its first token is scored), if the tokenizer has one.</summary>
    public int? BosTokenId { get; }
    /// <summary>The end-of-text id, if any (generation stops there; documents are joined with it for training).</summary>
    public int? EosTokenId { get; }
    /// <summary>What the codec is (for reports).</summary>
    public string Description { get; }

    /// <summary>Content ids of <paramref name="text"/>, with the BOS id first when <paramref name="addBos"/> and one exists.</summary>
    public int[] Encode(string text, bool addBos)
    {
        var ids = _encode(text);
        return addBos && BosTokenId is { } b ? [b, .. ids] : ids;
    }

    /// <summary>Text of <paramref name="ids"/>.</summary>
    public string Decode(IEnumerable<int> ids) => _decode(ids);

    /// <summary>Wraps a LoopRpt tokenizer.</summary>
    public static TextCodec From(LoopRptTokenizer t)
        => new(s => t.Encode(s), t.Decode, t.BosTokenId, t.EosTokenId, $"{t.Spec.Kind} ({t.VocabularySize} tokens)");

    /// <summary>Wraps a Hugging Face tokenizer.json with the config's special ids.</summary>
    public static TextCodec From(HfTokenizer t, OuroConfig config)
        => new(s => [.. t.Encode(s)], t.Decode, config.BosTokenId, config.EosTokenId, $"tokenizer.json ({t.VocabularySize} tokens)");

    /// <summary>
    /// Reads <paramref name="path"/> as a LoopRpt tokenizer file (written by <c>looprpt tokenizer</c>) or, failing that, as a
    /// Hugging Face <c>tokenizer.json</c> whose special ids come from <paramref name="config"/>.
    /// </summary>
    public static TextCodec LoadFile(string path, OuroConfig config)
    {
        if (!File.Exists(path)) throw CliException.Input($"Tokenizer file '{path}' does not exist.");
        string json = File.ReadAllText(path);
        try
        {
            return From(LoopRptTokenizer.Create(TokenizerSpec.FromJson(json)));
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidDataException or ArgumentException or NotSupportedException or KeyNotFoundException or InvalidOperationException)
        {
            try
            {
                return From(HfTokenizer.Load(path), config);
            }
            catch (InvalidDataException hf)
            {
                throw CliException.Model($"'{path}' is neither a LoopRpt tokenizer file ({e.Message}) nor a supported tokenizer.json ({hf.Message}).", hf);
            }
        }
    }

    /// <summary>Reads a tokenizer file written by <c>looprpt tokenizer</c> (TokenizerSpec JSON) or an HF tokenizer.json.</summary>
    public static LoopRptTokenizer LoadSpecFile(string path)
    {
        if (!File.Exists(path)) throw CliException.Input($"Tokenizer file '{path}' does not exist.");
        try
        {
            return LoopRptTokenizer.Create(TokenizerSpec.FromJson(File.ReadAllText(path)));
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidDataException or ArgumentException or NotSupportedException)
        {
            throw CliException.Model($"'{path}' is not a LoopRpt tokenizer file (write one with `looprpt tokenizer`): {e.Message}", e);
        }
    }
}
