using System.Buffers.Binary;
using System.Security.Cryptography;

namespace RecurFormer.Engine.Caching;

/// <summary>
/// Names a full KV block by what it holds: a hash of its tokens chained to the hash of every block before it, so two
/// blocks with the same name hold the same keys and values whatever sequence computed them. The chain starts from a
/// hash of everything else that changes the cache (the model and its cache layout), as vLLM salts its block hashes.
/// SHA-256 truncated to 128 bits: a collision would serve another prompt's state, so no cheap 64-bit hash.
/// </summary>
internal sealed class BlockHasher(string cacheIdentity, int blockSize)
{
    private readonly UInt128 _root = Hash(default, System.Text.Encoding.UTF8.GetBytes(cacheIdentity));

    public int BlockSize => blockSize;

    /// <summary>Hash of block <paramref name="index"/> of <paramref name="tokens"/>, given the previous block's hash.</summary>
    public UInt128 Next(UInt128? previous, IReadOnlyList<int> tokens, int index)
    {
        Span<byte> bytes = stackalloc byte[blockSize * 4];
        for (var i = 0; i < blockSize; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(bytes[(i * 4)..], tokens[index * blockSize + i]);
        }
        return Hash(previous ?? _root, bytes);
    }

    private static UInt128 Hash(UInt128 previous, ReadOnlySpan<byte> payload)
    {
        Span<byte> input = stackalloc byte[16 + payload.Length];
        BinaryPrimitives.WriteUInt128LittleEndian(input, previous);
        payload.CopyTo(input[16..]);
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(input, digest);
        return BinaryPrimitives.ReadUInt128LittleEndian(digest);
    }
}
